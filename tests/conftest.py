"""Shared fixtures: a real embedded Redis on a free port, a small deterministic data slice, an applied Feast repo.

Everything is session-scoped and real; the environment variables are set so subprocesses (feast apply,
bytewax, the server) see the same settings.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pantry import apikeys, dataset_load
from pantry.featurestore import repo
from pantry.redis_server import EmbeddedRedis, free_port, sync_client
from pantry.settings import Settings, from_env

TEST_HOUSEHOLDS = 40


@pytest.fixture(scope="session")
def test_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pantry")


@pytest.fixture(scope="session")
def redis_server(test_root: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(port=free_port(), directory=test_root / "redis").start(daemonize=False)
    yield server
    server.stop()


class ApiKeys:
    """Random keys made for this test session, one per role (`keys.admin`, ...), plus `data`: answers + ingest +
    features + metrics, what the `http` fixture sends. `headers(role)` is the header for one of them."""

    ROLES: ClassVar[dict[str, tuple[str, ...]]] = {
        "client": ("answers",), "ingest": ("ingest",), "features": ("features",), "metrics": ("metrics",),
        "merchandiser": ("merchandiser",), "ml_engineer": ("ml_engineer",), "admin": ("admin",),
        "data": ("answers", "ingest", "features", "metrics")}

    def __init__(self) -> None:
        self.keys = {role: apikeys.new_key() for role in self.ROLES}
        self.entries = tuple(apikeys.entry_line(f"test-{role}", scopes, self.keys[role])
                             for role, scopes in self.ROLES.items())

    def __getattr__(self, role: str) -> str:
        try:
            return self.__dict__["keys"][role]
        except KeyError:
            raise AttributeError(role) from None

    def headers(self, role: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[role]}


@pytest.fixture(scope="session")
def api_keys() -> ApiKeys:
    return ApiKeys()


@pytest.fixture(scope="session")
def settings(test_root: Path, redis_server: EmbeddedRedis, api_keys: ApiKeys) -> Settings:
    env = {
        # every server and client of the session (subprocesses included) uses the session's random keys
        "PANTRY_API_KEYS": ",".join(api_keys.entries),
        "PANTRY_CLIENT_KEY": api_keys.data,
        "PANTRY_INGEST_KEY": api_keys.data,
        "PANTRY_FEATURES_KEY": api_keys.data,
        "PANTRY_DATA_DIR": str(test_root / "data"),
        "PANTRY_ARTIFACTS_DIR": str(test_root / "artifacts"),
        "PANTRY_REDIS_PORT": str(redis_server.port),
        "PANTRY_CLOCK": "event",
    }
    os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    from pantry.settings import get_settings

    get_settings.cache_clear()
    return from_env()


@pytest.fixture(scope="session")
def data_slice(settings: Settings) -> Path:
    return dataset_load.load(settings, households=TEST_HOUSEHOLDS, progress=False)


@pytest.fixture(scope="session")
def feast_applied(settings: Settings, data_slice: Path) -> Settings:
    """`feast apply` done and the batch views (product, campaign_coupon) online."""
    from pantry.featurestore.batch_views import write_batch_views

    repo.apply(settings)
    write_batch_views(settings, progress=False)
    return settings


@pytest.fixture()
def redis_client(settings: Settings):
    return sync_client(settings)
