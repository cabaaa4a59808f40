"""A real pantry server (granian, one worker) in a subprocess on a free port, against the session's Redis.

`pantry serve --no-live`: the supervisor with the API only (no live dataflow on the session's Redis: its watermark is
the event clock other tests judge freshness by); /readyz reports the live flow without judging it
(PANTRY_LIVE_MAX_AGE_S=0). tests/serving/test_supervision.py runs the whole thing."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import httpx
import msgspec
import pytest

from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.redis_server import EmbeddedRedis, free_port, sync_client
from pantry.settings import Settings, subprocess_env


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()[-4000:]


def start_server(settings: Settings, log_dir, workers: int = 1, extra_env: dict[str, str] | None = None,
                 timeout_s: float = 60.0) -> Server:
    port = free_port()
    env = subprocess_env(settings)
    # PANTRY_CONSOLE_SAMPLE_MAX_AGE_S=0: the features page walks the keyspace again at every view (tests write rows)
    env.update({"PANTRY_PORT": str(port), "PANTRY_CLOCK": settings.clock, "PANTRY_LIVE_MAX_AGE_S": "0",
                "PANTRY_LIVE_MAX_LAG_S": "0", "PANTRY_CONSOLE_SAMPLE_MAX_AGE_S": "0",
                **(extra_env or {})})
    log_path = os.path.join(log_dir, f"server-{port}.log")
    with open(log_path, "w") as log:
        cmd = [sys.executable, "-m", "pantry.cli", "serve", "--no-live", "--workers", str(workers)]
        process = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=0.5).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not come up:\n{server.log()}")


@pytest.fixture(scope="session")
def api(feast_applied: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(feast_applied, tmp_path_factory.mktemp("serving-logs"))
    yield server
    server.stop()


def api_headers() -> dict[str, str]:
    """The headers of a request with the session's data key (answers, ingest, features, clock), for code without
    the api_keys fixture at hand (the settings fixture exports the key as PANTRY_CLIENT_KEY)."""
    return {"X-API-Key": os.environ["PANTRY_CLIENT_KEY"]}


def keyed_client(url: str, api_keys, role: str = "data", timeout: float = 10.0) -> httpx.Client:
    """An HTTP client of a test server that sends one of the session's keys (default: `data`, i.e. answers, ingest,
    features, metrics); admin calls pass `headers=api_keys.headers("merchandiser")` etc."""
    return httpx.Client(base_url=url, timeout=timeout, headers=api_keys.headers(role))


@pytest.fixture()
def http(api: Server, api_keys) -> Iterator[httpx.Client]:
    with keyed_client(api.url, api_keys) as client:
        yield client


@pytest.fixture()
def events_http(api: Server) -> Iterator[httpx.Client]:
    """A client for POST /v1/events, /v1/features and GET /v1/clock (with api_headers())."""
    with httpx.Client(base_url=api.url, timeout=10.0, headers=api_headers()) as client:
        yield client


@pytest.fixture(scope="session")
def layout(feast_applied: Settings):
    return repo.layout(feast_applied)


@pytest.fixture()
def write_features(feast_applied: Settings, layout):
    """Write online rows in Feast's layout (what the stream would have written): view, join values, values, ts."""
    client = sync_client(feast_applied)

    def write(view: str, join_values: tuple[int, ...], values: dict, ts: datetime) -> None:
        write_rows(client, layout, view, [(join_values, values, ts)])

    return write


def _train(settings: Settings, *args: str) -> None:
    cmd = [sys.executable, "-m", "pantry.cli", "train", "--no-push", *args]
    result = subprocess.run(cmd, env=subprocess_env(settings), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture(scope="session")
def trained_models(feast_applied: Settings) -> tuple[str, str]:
    """All three models trained on the slice and ACTIVE, plus a second recommender version (not active).

    Returns (active recommender version, newer recommender version). The session server hot-reloads them.
    """
    from pantry.models import registry

    _train(feast_applied, "--until", "2017-09-01", "--activate", "--force")
    active = registry.active_version(feast_applied.models_dir, "recommender")
    _train(feast_applied, "--only", "recommender", "--until", "2017-11-01", "--force")
    newer = registry.versions(feast_applied.models_dir, "recommender")[-1]
    assert active and newer and newer != active
    return active, newer


@pytest.fixture()
def own_redis(tmp_path):
    """A Redis of the test's own (an outage or a pause there touches nothing else)."""
    server = EmbeddedRedis(port=free_port(), directory=tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture()
def own_settings(feast_applied, own_redis, tmp_path) -> Settings:
    """Settings on own_redis with an own data dir (a copy of the registry and dataset): feature_store.yaml there
    names own_redis, not the session's."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(feast_applied.registry_path, data_dir / "registry.db")
    shutil.copytree(feast_applied.dataset_dir, data_dir / "data")
    return msgspec.structs.replace(feast_applied, data_dir=data_dir, embedded_redis_port=own_redis.port)



CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token of a console page's forms."""
    match = CSRF_INPUT.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def console_login(url: str, key: str) -> httpx.Client:
    """An HTTP client logged in to the console with `key` (its session cookie kept by the client)."""
    client = httpx.Client(base_url=url, timeout=10.0)
    token = csrf_of(client.get("/console/login").text)
    answer = client.post("/console/login", data={"api_key": key, "csrf_token": token})
    assert answer.status_code == 303, answer.text[:500]
    return client


@pytest.fixture()
def console(api: Server, api_keys) -> Iterator[Callable[[str], httpx.Client]]:
    """`console(role)`: an HTTP client logged in to the session server's console with that role's key."""
    clients: list[httpx.Client] = []

    def login(role: str) -> httpx.Client:
        clients.append(console_login(api.url, api_keys.keys[role]))
        return clients[-1]

    yield login
    for client in clients:
        client.close()
