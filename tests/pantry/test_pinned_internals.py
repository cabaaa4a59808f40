"""The libraries whose internals pantry touches are pinned exactly in pyproject.toml, and what pantry relies on in
them is still there and still behaves: an upgrade that moves it fails here, by name, before it fails in production.
(The codec's bytes against Feast's own encoders are checked in tests/pantry/featurestore/.)"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest

PINNED = ("redis", "hiredis", "mmh3", "typeguard", "prometheus-client", "feast")


def _pins() -> dict[str, str]:
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pins = {}
    for spec in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^;\s]+)", spec.strip())
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


@pytest.mark.parametrize("package", PINNED)
def test_packages_whose_internals_pantry_uses_are_pinned_and_installed_at_the_pin(package):
    pins = _pins()
    assert package in pins, f"{package} must be pinned with == in pyproject.toml (pantry uses its internals)"
    assert importlib.metadata.version(package) == pins[package], \
        f"{package} {importlib.metadata.version(package)} is installed, the pin is {pins[package]}: run `make setup`"


def test_redis_py_connection_exposes_the_hiredis_reader_the_round_trip_reads_from(redis_server):
    import redis.asyncio
    from redis._parsers.hiredis import NOT_ENOUGH_DATA

    async def read() -> list:
        conn = redis.asyncio.Connection(host="127.0.0.1", port=redis_server.port)
        await conn.connect()
        try:
            await conn.send_packed_command(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n", check_health=False)
            parser = conn._parser  # pantry/featurestore/roundtrip.py: _read_replies
            replies = []
            while len(replies) < 2:
                reply = parser._reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    await parser.read_from_socket()
                    continue
                replies.append(reply)
            return replies
        finally:
            await conn.disconnect()

    assert asyncio.run(read()) == [b"PONG", b"hi"]


def test_hiredis_packs_commands_as_redis_resp():
    import hiredis

    assert hiredis.pack_command((b"HMGET", b"k", b"f")) == b"*3\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\nf\r\n"


def test_prometheus_histogram_children_have_the_buckets_serving_metrics_fills():
    from prometheus_client import CollectorRegistry, Histogram, values

    child = Histogram("pinned_check_seconds", "x", ["a"], registry=CollectorRegistry(), buckets=(0.1, 1.0)).labels("a")
    assert list(child._upper_bounds) == [0.1, 1.0, float("inf")]  # serving/metrics.py: Pending.observe / flush
    child._sum.inc(0.5)
    child._buckets[1].inc(1)
    assert child._sum.get() == 0.5 and child._buckets[1].get() == 1
    assert hasattr(values, "ValueClass") and hasattr(values, "MutexValue")  # serving/metrics.py: render


def test_typeguard_typechecked_is_the_decorator_feast_imports():
    import typeguard

    assert callable(typeguard.typechecked)  # pantry/featurestore/feast_sdk.py swaps it while Feast is imported


def test_pantry_version_is_the_installed_package_version():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pantry.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"pantry {importlib.metadata.version('pantry')}"
