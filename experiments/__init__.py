"""Validation studies behind the models' settings: reproducible scripts, not part of the product (see README.md)."""
