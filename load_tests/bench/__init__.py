"""`pantry bench`: every benchmark in one run, written to docs/BENCHMARKS.md (see harness.py)."""
