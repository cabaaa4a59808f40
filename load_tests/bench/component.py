"""Run one component's `run_bench` in its own process (a crash or overrun cannot take the harness down).

    python -m load_tests.bench.component streaming OUT.json [BASE_URL]

Writes {"figures": {...}} or {"not_run": "reason"} to OUT.json.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

import msgspec

COMPONENTS = {"streaming": "streaming.bench", "training": "training.bench", "serving": "serving.bench"}


def main(argv: list[str]) -> int:
    name, out = argv[0], Path(argv[1])
    base_url = argv[2] if len(argv) > 2 else None
    module_name = COMPONENTS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        out.write_bytes(msgspec.json.encode({"not_run": f"not run ({module_name} does not exist yet: {exc})"}))
        return 0
    run_bench = getattr(module, "run_bench", None)
    if run_bench is None:
        out.write_bytes(msgspec.json.encode({"not_run": f"not run ({module_name} has no run_bench)"}))
        return 0
    from pantry.settings import get_settings

    settings = get_settings()
    try:
        figures = run_bench(settings, base_url) if base_url else run_bench(settings)
    except Exception as exc:
        traceback.print_exc()
        out.write_bytes(msgspec.json.encode({"not_run": f"failed ({type(exc).__name__}: {exc})"}))
        return 1
    out.write_bytes(msgspec.json.encode({"figures": figures}, enc_hook=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
