"""Each Locust user class runs for a few seconds against a real pantry (`pantry serve` on a free port, real Redis,
applied Feast repo, the 40-household slice) and must see zero failures: no HTTP errors, no contract violations."""

from __future__ import annotations

from pathlib import Path

import pytest

from load_tests import runner, server
from load_tests.slo import Slo, evaluate
from pantry.redis_server import free_port
from pantry.settings import Settings

USER_CLASSES = {  # class -> the endpoints it must have exercised
    "StorefrontUser": {"/v1/recommendations", "/v1/events"},
    "MobileAppUser": {"/v1/recommendations", "/v1/next-best-action"},
    "GroceryOrderFlowUser": {"/v1/events", "/v1/substitutions"},
    "MarketingUser": {"/v1/next-best-action"},
}
RUN_S = 4


@pytest.fixture(scope="module")
def pantry_url(feast_applied: Settings, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with server.background_serve(feast_applied, log, port=free_port(), workers=1, timeout_s=90) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def runs(feast_applied: Settings, pantry_url: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """All four classes at once (separate Locust processes), a few seconds each, paced at 8 requests/s."""
    out = tmp_path_factory.mktemp("load")
    started = {
        name: runner.start_locust(feast_applied, out / name, host=pantry_url, users=2, rate=8, duration_s=RUN_S,
                                  spawn_rate=2, user_classes=(name,))
        for name in USER_CLASSES
    }
    for proc, _ in started.values():
        proc.wait(timeout=RUN_S + 60)
    return {name: run.csv_prefix for name, (_, run) in started.items()}


@pytest.mark.parametrize("user_class", list(USER_CLASSES))
def test_user_class_sees_no_failures(runs: dict[str, Path], user_class: str):
    verdict = evaluate(Slo(), runs[user_class])
    assert verdict.total_requests > 0, f"{user_class} made no requests"
    assert verdict.total_failures == 0, f"{user_class}: {verdict.failure_messages[:5]}"
    assert verdict.contract_violations == 0
    exercised = {e.name for e in verdict.endpoints if e.requests}
    assert USER_CLASSES[user_class] <= exercised, f"{user_class} exercised only {exercised}"


def test_the_gate_fails_when_the_service_is_slower_than_its_slo(runs: dict[str, Path]):
    impossible = Slo(p99_ms={"/v1/recommendations": 1e-6}, default_p99_ms=1e-6)
    verdict = evaluate(impossible, runs["StorefrontUser"])
    assert not verdict.ok
    assert any("p99" in p for e in verdict.endpoints for p in e.problems)
