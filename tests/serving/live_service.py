"""`pantry serve` with its live flow, in a data dir of its own on one database of the session's Redis (emptied
first): the service that the live tests post events to and read answers from. With PANTRY_LIVE_MAX_AGE_S=0 /readyz
does not wait for the flow's heartbeat; `ready` can ask for more of the /readyz answer."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from pantry.redis_server import free_port, sync_client
from pantry.settings import Settings, from_env


@contextmanager
def serve_live(feast_applied: Settings, root: Path, db: int, extra_env: dict[str, str] | None = None,
               ready: Callable[[dict], bool] = lambda _readyz: True) -> Iterator[tuple[str, dict[str, str]]]:
    """Yields (base url, the service's environment) once /readyz is 200 and `ready(its JSON)` holds."""
    data = root / "data"
    data.mkdir()
    (data / "data").symlink_to(feast_applied.dataset_dir)
    shutil.copy(feast_applied.registry_path, data / "registry.db")
    port = free_port()
    env = {**os.environ, "PANTRY_DATA_DIR": str(data), "PANTRY_PORT": str(port), "PANTRY_WORKERS": "1",
           "REDIS_URL": f"redis://127.0.0.1:{feast_applied.embedded_redis_port}/{db}", "PANTRY_LIVE_MAX_AGE_S": "0",
           "PANTRY_ACCESS_LOG": "off", **(extra_env or {})}
    sync_client(from_env(env)).flushdb()
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pantry.cli", "serve"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                answer = httpx.get(f"{url}/readyz", timeout=2)
                if answer.status_code == 200 and ready(answer.json()):
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        yield url, env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
