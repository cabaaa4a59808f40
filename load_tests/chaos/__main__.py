"""`make chaos` = `python -m load_tests.chaos`: faults under load against the demo stack, docs/RELIABILITY.md."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("chaos")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the report (default: docs/RELIABILITY.md).")
def main(output: Path | None) -> None:
    """Start the demo stack (own data dir and ports), apply each fault under a steady load, write the report."""
    from load_tests.chaos.harness import run_all

    sys.exit(run_all(output))


if __name__ == "__main__":
    main(prog_name="python -m load_tests.chaos")
