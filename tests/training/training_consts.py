"""Constants shared by the training tests (tests/ has no packages, so they live in a uniquely named module)."""

from datetime import UTC, datetime

from training.als import AlsParams

TINY_ALS = AlsParams(factors=16, iterations=3)
SLICE_UNTIL = datetime(2017, 11, 1, tzinfo=UTC)
TRAINED = ("recommender", "substitutions", "next_best_action")
