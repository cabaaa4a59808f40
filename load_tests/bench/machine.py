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


PAGE_REPORTING_ORDER = Path("/sys/module/page_reporting/parameters/page_reporting_order")


def free_page_reporting(order_file: Path = PAGE_REPORTING_ORDER) -> str:
    """A VM whose kernel reports free pages to its host (virtio-balloon) gives memory back within seconds of its
    release, and touching it again costs ~30 us a page: it lengthens every allocation peak, such as a recovery
    snapshot (docs/STREAMING.md "Limits")."""
    try:
        value = int(order_file.read_text())
    except (OSError, ValueError):
        return "no"
    # the kernel reports free blocks of 2^order pages; past its largest order (10) it reports none
    return f"on (blocks of {4 << value} KiB and up)" if value <= 10 else f"off (page_reporting_order {value})"


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
        "free memory reported to a VM host": free_page_reporting(),
        "load average at start": load_average(),
        "load average at end": "-",  # the harness fills it in when the run ends
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }
