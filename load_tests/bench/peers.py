"""The peers measured in the same run: `feast serve` on the same feature store, and a hello-world ceiling."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from load_tests.server import background
from pantry.featurestore import repo
from pantry.redis_server import free_port
from pantry.settings import Settings, subprocess_env


@contextmanager
def feast_serve(settings: Settings, log: Path, workers: int) -> Iterator[str]:
    port = free_port()
    cmd = repo.feast_command(settings, "serve", "-h", "127.0.0.1", "-p", str(port), "--no-access-log",
                                   "-w", str(workers))
    with background(cmd, subprocess_env(settings), f"http://127.0.0.1:{port}", log, "/health",
                    timeout_s=180) as url:
        yield url


@contextmanager
def hello_world(log: Path, workers: int) -> Iterator[str]:
    """Litestar + msgspec hello-world under granian, the way pantry serves (the framework's ceiling here)."""
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    cmd = [granian, "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--no-ws", "load_tests.bench.hello_app:app"]
    with background(cmd, dict(os.environ), f"http://127.0.0.1:{port}", log, "/healthz", timeout_s=60) as url:
        yield url
