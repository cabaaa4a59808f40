"""Run one part of the bench (streaming, serving, training) in its own process, so a crash or an overrun of one
cannot take the harness or the other parts down; its figures come back as JSON in a file.

    python -m load_tests.bench.parts NAME OUT.json [--quick] [--base-url URL]

OUT.json holds {"figures": {...}} or {"not_run": "reason"}.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import traceback
from pathlib import Path

import msgspec

from load_tests.bench.figures import PART_TYPES

PARTS = {"streaming": "load_tests.bench.streaming", "serving": "load_tests.bench.serving",
         "training": "load_tests.bench.training", "deployed": "load_tests.bench.deployed",
         "sustained": "load_tests.bench.sustained"}


def run_part(name: str, out_dir: Path, timeout_s: float, env: dict[str, str], quick: bool = False,
             base_url: str | None = None) -> object | str:
    """The part's figures (a figures.py record), or why there are none ("not run (...)" / "failed (...)")."""
    out = out_dir / f"{name}.json"
    log = out_dir / f"{name}.log"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "load_tests.bench.parts", name, str(out), *(["--quick"] if quick else []),
           *(["--base-url", base_url] if base_url else [])]
    with log.open("wb") as log_file:
        try:
            subprocess.run(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"not run (stopped after {timeout_s:.0f} s, the rest of the time budget; log {log})"
    if not out.exists():
        return f"failed (no result; log {log})"
    outcome = msgspec.json.decode(out.read_bytes(), type=dict[str, PART_TYPES[name] | str])
    return outcome.get("figures") or outcome.get("not_run") or "not run (no figures)"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m load_tests.bench.parts")
    parser.add_argument("name", choices=sorted(PARTS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--base-url", default=None)
    args = parser.parse_args(argv)
    from pantry.settings import get_settings

    kwargs: dict[str, object] = {"quick": args.quick}
    if args.base_url:
        kwargs["base_url"] = args.base_url
    try:
        figures = importlib.import_module(PARTS[args.name]).run(get_settings(), **kwargs)
    except Exception as exc:  # any failure of the part is reported in its row, with the traceback in its log
        traceback.print_exc()
        args.out.write_bytes(msgspec.json.encode({"not_run": f"failed ({type(exc).__name__}: {exc})"[:400]}))
        return 1
    args.out.write_bytes(msgspec.json.encode({"figures": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
