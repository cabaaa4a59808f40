"""The decision pipeline's rules (serving/answers/pipeline.py) and the fallback enum the OpenAPI schema documents."""

from __future__ import annotations

import typing
from datetime import UTC, datetime

from pantry.featurestore.reader import Row
from pantry.schemas import Fallback
from serving.answers.pipeline import Decision, customer_fallback, guarded
from serving.app import create_app

NOW = datetime(2017, 6, 1, tzinfo=UTC)


def row(status: str) -> Row:
    values = {"x": 1} if status != "missing" else None
    return Row(values if status == "present" else None, NOW if values else None, 1.0, status, values)


def test_customer_fallback_names_the_worst_case_only_when_nothing_is_usable():
    assert customer_fallback([row("missing"), row("missing")]) == "cold_start"
    assert customer_fallback([row("stale"), row("missing")]) == "features_stale"
    assert customer_fallback([row("stale"), row("present")]) is None
    assert customer_fallback([row("present")]) is None


def test_the_first_fallback_reason_stands_and_a_model_error_degrades_the_answer():
    decision = Decision("recommendations", None, 1, NOW, {}, {}, "cold_start", 0.0)
    decision.fall_back("model_unavailable")
    assert decision.fallback == "cold_start"

    fine = Decision("recommendations", None, 1, NOW, {}, {}, None, 0.0)
    assert guarded(fine, lambda: [1], lambda: [0], "model") == [1] and fine.fallback is None

    def broken() -> list[int]:
        raise ValueError("bug")

    assert guarded(fine, broken, lambda: [0], "model") == [0]
    assert fine.fallback == "model_error"


def test_openapi_documents_exactly_the_fallbacks_there_are():
    schema = create_app().openapi_schema.to_schema()["components"]["schemas"]
    for response in ("RecommendationResponse", "SubstitutionResponse", "NextBestActionResponse"):
        documented = schema[response]["properties"]["fallback"]["enum"]
        assert set(documented) == {*typing.get_args(Fallback), None}, response
