"""Helpers every scorer (and training's index maps) use: id lookups in sorted id arrays, counts in words."""

from __future__ import annotations

import numpy as np


def lookup(sorted_ids: np.ndarray, value: int) -> int:
    """Position of `value` in `sorted_ids`, -1 when absent."""
    pos = int(np.searchsorted(sorted_ids, value))
    return pos if pos < len(sorted_ids) and int(sorted_ids[pos]) == value else -1


def lookup_many(sorted_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of each id in `sorted_ids` (int64), -1 for the absent ones."""
    ids = np.asarray(ids, dtype=np.int64)
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    found = len(sorted_ids) > 0
    ok = (sorted_ids[pos] == ids) if found else np.zeros(len(ids), dtype=bool)
    return np.where(ok, pos, -1).astype(np.int64)


def times(n: float) -> str:
    """A count for a reason shown to the shopper: once, twice, 3 times."""
    n = round(n)
    return "once" if n == 1 else "twice" if n == 2 else f"{n} times"
