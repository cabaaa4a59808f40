"""pantry.client against a running pantry: typed answers, typed events, the server's problem details as errors, and
retries that ride out an outage (Redis stopped under a real server, `Retry-After` honoured)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from pantry import client as pantry_client
from pantry.client import NO_RETRY, AsyncPantryClient, PantryClient, PantryError, Retry
from pantry.events import ProductView
from pantry.schemas import (
    EventsAccepted,
    FeaturesResponse,
    NextBestActionResponse,
    RecommendationResponse,
    SubstitutionResponse,
)
from tests.serving.conftest import start_server

CUSTOMER, STORE = 1_364, 367


def test_the_client_gets_every_answer_typed_and_posts_events_once(api, api_keys):
    with PantryClient(api.url, api_keys.data) as pantry:
        recs = pantry.recommendations(CUSTOMER, store_id=STORE, k=5)
        assert isinstance(recs, RecommendationResponse) and len(recs.items) == 5 and recs.decision_id
        subs = pantry.substitutions(CUSTOMER, STORE, [1_029_743, 1_106_523], k=3)
        assert isinstance(subs, SubstitutionResponse)
        assert [s.product_id for s in subs.substitutions] == [1_029_743, 1_106_523]
        nba = pantry.next_best_action(CUSTOMER, channel="email")
        assert isinstance(nba, NextBestActionResponse) and nba.model_version
        feats = pantry.features({"customer_id": [CUSTOMER], "store_id": [STORE]}, feature_service="recommendations_v1")
        assert isinstance(feats, FeaturesResponse) and feats.metadata.feature_names[:2] == ["customer_id", "store_id"]

        now = pantry.clock().now
        view = ProductView(event_id=f"client-{uuid.uuid4().hex}", ts=now, customer_id=CUSTOMER, product_id=1_029_743)
        assert pantry.send_events([view]) == EventsAccepted(accepted=1, duplicate=False)
        assert pantry.send_events([view]) == EventsAccepted(accepted=1, duplicate=True)  # written once


def test_the_async_client_gets_the_same_answers(api, api_keys):
    async def ask():
        async with AsyncPantryClient(api.url, api_keys.data) as pantry:
            return await asyncio.gather(pantry.recommendations(CUSTOMER, k=3, surface="buy_again"),
                                        pantry.next_best_action(CUSTOMER, k=2))

    recs, nba = asyncio.run(ask())
    assert isinstance(recs, RecommendationResponse) and len(recs.items) <= 3
    assert isinstance(nba, NextBestActionResponse) and len(nba.actions) <= 2


def test_an_error_raises_the_servers_problem_detail(api, api_keys):
    with PantryClient(api.url, api_keys.data) as pantry:
        with pytest.raises(PantryError) as bad:
            pantry.substitutions(CUSTOMER, STORE, [])
        assert bad.value.status == 400 and bad.value.problem.title == "Bad Request"
        assert "product_ids" in bad.value.problem.detail and bad.value.problem.instance == "/v1/substitutions"
    with PantryClient(api.url, api_keys.ingest) as wrong_key, pytest.raises(PantryError) as refused:
        wrong_key.recommendations(CUSTOMER)
    assert refused.value.status == 403 and "`answers` scope" in refused.value.problem.detail


def test_a_503_is_retried_honouring_retry_after_until_redis_is_back(own_settings, own_redis, tmp_path, api_keys):
    server = start_server(own_settings, tmp_path)
    try:
        entities = {"customer_id": [CUSTOMER]}
        with PantryClient(server.url, api_keys.data, retry=NO_RETRY) as once:
            assert once.features(entities, features=["customer_activity:orders_7d"]).results
            own_redis.stop()
            with pytest.raises(PantryError) as down:
                once.features(entities, features=["customer_activity:orders_7d"])
            assert down.value.status == 503

        restart = threading.Timer(1.5, own_redis.start)
        restart.start()
        started = time.monotonic()
        with PantryClient(server.url, api_keys.data, retry=Retry(attempts=10, max_backoff_s=1.0)) as patient:
            answer = patient.features(entities, features=["customer_activity:orders_7d"])
        restart.join()
        assert answer.metadata.feature_names == ["customer_id", "orders_7d"]
        assert time.monotonic() - started >= 1.5  # it waited (Retry-After: 1, twice or more) rather than failing
    finally:
        server.stop()


def test_a_call_is_data_any_http_stack_can_send():
    call = pantry_client.recommendations(CUSTOMER, k=2)
    assert (call.method, call.path) == ("POST", "/v1/recommendations")
    assert b'"customer_id":1364' in call.body
    with pytest.raises(PantryError) as error:
        call.answer(429, b'{"status":429,"title":"Too Many Requests","detail":"slow down"}')
    assert error.value.problem.detail == "slow down"
