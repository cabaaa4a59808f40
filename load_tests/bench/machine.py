"""What the figures were measured on: the machine, the versions that matter, the date."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("litestar", "msgspec", "granian", "feast", "bytewax", "redis", "onnxruntime", "implicit", "locust")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def load_average() -> str:
    """Other work on the machine during a run shows in every figure: the report says how busy it was."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "-"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def describe() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    try:
        from pantry.redis_server import redis_server_binary

        redis_out = subprocess.run([str(redis_server_binary()), "--version"], capture_output=True, text=True)
        versions["redis-server"] = redis_out.stdout.split()[2].removeprefix("v=")
    except Exception:  # the version line is informative only
        versions["redis-server"] = "-"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "memory": f"{memory_gib():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load average at start": load_average(),
        "load average at end": "-",  # the harness fills it in when the run ends
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
