"""The runtime models serving loads: scorers behind pantry.scoring's protocols, the registry, version loading.

numpy and onnxruntime only (no pandas, scipy or LightGBM): training/ fits the models and writes the artifacts, and
builds its training and evaluation sets with the feature functions defined here, so both compute the same rows.
"""

from pantry.models.loading import ModelSet, load_active, load_version

__all__ = ["ModelSet", "load_active", "load_version"]
