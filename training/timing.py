"""Per-step wall times, printed as they finish and recorded in manifests and the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click


class Timer:
    def __init__(self, echo: Callable[[str], None] | None = None):
        self.steps: dict[str, float] = {}
        self.echo = echo if echo is not None else click.echo

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.steps[name] = round(self.steps.get(name, 0.0) + elapsed, 3)
            self.echo(f"  {name}: {elapsed:.2f} s")


def quiet() -> Timer:
    return Timer(echo=lambda _msg: None)
