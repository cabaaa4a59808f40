"""Training fixtures: one tiny trained registry per session (the 40-household slice, few ALS iterations)."""

from __future__ import annotations

import pytest
from training_consts import SLICE_UNTIL, TINY_ALS, TRAINED

from pantry.settings import Settings


@pytest.fixture(scope="session")
def trained(settings: Settings, data_slice, feast_applied) -> Settings:
    """All three models trained on the slice before SLICE_UNTIL and activated (embeddings pushed online)."""
    from training.pipeline import train

    train(settings, SLICE_UNTIL, only=TRAINED, activate=True, als_params=TINY_ALS, echo=lambda _m: None)
    return settings
