"""SLO files and durations: good input is read, bad input gets a message that says what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests.runner import parse_duration
from load_tests.slo import DEFAULT_SLO_FILE, SloError, load_slo


def test_the_shipped_slo_file_gates_every_endpoint_client_side():
    slo = load_slo(DEFAULT_SLO_FILE)
    endpoints = {"/v1/recommendations", "/v1/substitutions", "/v1/next-best-action", "/v1/events"}
    assert set(slo.p99_ms) == endpoints
    assert all(0 < ms <= 50 for ms in slo.p99_ms.values())  # client-side, end to end (see the file's header)
    assert slo.max_failure_rate == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('p99_msec = {"/v1/x" = 1}', "unknown field"),
        ('[p99_ms]\n"/v1/x" = -5', "must be > 0"),
        ("max_failure_rate = 2", "within 0..1"),
        ("max_failure_rate = ", "not valid TOML"),
        ('[p99_ms]\n"/v1/x" = "fast"', "Expected `float`"),
    ],
)
def test_bad_slo_files_are_rejected_with_a_reason(tmp_path: Path, text: str, needle: str):
    path = tmp_path / "slo.toml"
    path.write_text(text)
    with pytest.raises(SloError, match=needle):
        load_slo(path)


def test_a_missing_slo_file_is_named():
    with pytest.raises(SloError, match="does not exist"):
        load_slo(Path("/nonexistent/slo.toml"))


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("2m", 120), ("1h30m", 5400), ("90", 90), ("1m5s", 65)])
def test_durations(text: str, seconds: int):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "0s", "-3s", "1.5m"])
def test_bad_durations(text: str):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
