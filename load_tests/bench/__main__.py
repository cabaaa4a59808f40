"""`make bench` = `python -m load_tests.bench`: run the whole bench from the checkout, write docs/BENCHMARKS.md."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("bench")
@click.option("--quick", is_flag=True, help="Shorter steps (a smoke run; the figures are less stable).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the report (default: docs/BENCHMARKS.md).")
@click.option("--render-only", is_flag=True, help="Re-render the report from the last run's figures, measure nothing.")
def main(quick: bool, output: Path | None, render_only: bool) -> None:
    """Run every benchmark in one go (own data dir and Redis) and write docs/BENCHMARKS.md."""
    from load_tests.bench.harness import render_last, run_all

    sys.exit(render_last(output) if render_only else run_all(quick=quick, output=output))


if __name__ == "__main__":
    main(prog_name="python -m load_tests.bench")
