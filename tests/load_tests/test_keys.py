"""The keys the load tests and the bench send (load_tests/keys.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.keys import MissingKey, headers_for, key_for, with_run_key
from pantry import apikeys
from pantry.settings import from_env, subprocess_env


def test_a_run_key_reaches_the_server_and_the_clients():
    """`pantry load` / `make bench` with their own server: one fresh key, configured in the server's settings and
    sent by every client, through the environment of their subprocesses."""
    s = with_run_key(from_env({}))
    child = from_env(subprocess_env(s))
    key = headers_for(child, "/v1/events")["X-API-Key"]
    assert key == child.client_key == child.features_key
    assert apikeys.load(child.api_keys, Path("/nonexistent")).lookup(key).scopes == set(apikeys.DATA_SCOPES)
    assert with_run_key(from_env({})).client_key != key  # random per run


def test_a_missing_key_names_the_variable():
    bare = from_env({})
    for path, var in (("/v1/recommendations", "PANTRY_CLIENT_KEY"), ("/v1/events", "PANTRY_INGEST_KEY"),
                      ("/v1/features", "PANTRY_FEATURES_KEY")):
        with pytest.raises(MissingKey, match=var):
            key_for(bare, path)
