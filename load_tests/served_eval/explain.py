"""Why served and in-process figures differ, in words, from the figures of the run."""

from __future__ import annotations

from typing import Any


def explanation(run: dict[str, Any]) -> list[str]:
    return []
