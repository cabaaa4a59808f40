"""The contract checks catch what they claim to catch (pure: bodies in, violations out)."""

from __future__ import annotations

import msgspec
import pytest

from load_tests import contract

enc = msgspec.json.encode


def rec_body(items: list[dict], fallback: str | None = None, **over) -> bytes:
    return enc({"decision_id": "d1", "model_version": "v1", "items": items, "fallback": fallback, **over})


def item(pid: int, score: float = 0.5) -> dict:
    return {"product_id": pid, "score": score, "reason": "bought 3 times"}


def check_rec(body: bytes, status: int = 200, **kw):
    args = {"k": 3, "surface": "for_you", "exclude": (), "bought": (), **kw}
    return contract.check_recommendations(status, body, **args)


def test_a_valid_recommendation_passes():
    answer = check_rec(rec_body([item(1), item(2)]))
    assert [i.product_id for i in answer.items] == [1, 2]


@pytest.mark.parametrize(
    ("body", "kw", "needle"),
    [
        (rec_body([item(1), item(2), item(3), item(4)]), {}, "4 items for k=3"),
        (rec_body([item(1), item(1)]), {}, "duplicate"),
        (rec_body([item(7)]), {"exclude": (7,)}, "must not be offered"),
        (rec_body([item(1)]), {"unknown_customer": True}, "unknown customer got fallback=null"),
        (rec_body([item(5)]), {"surface": "discover", "bought": (5,)}, "already buys"),
        (rec_body([], fallback="Something went wrong, sorry!"), {}, "short snake_case"),
        (rec_body([item(1)], decision_id=""), {}, "decision_id"),
        (enc({"decision_id": "d", "items": [], "fallback": None}), {}, "model_version"),
        (b"<html>oops</html>", {}, "not JSON"),
    ],
)
def test_recommendation_violations_are_caught(body: bytes, kw: dict, needle: str):
    with pytest.raises(contract.ContractViolation, match=needle):
        check_rec(body, **kw)


def test_a_server_error_is_a_violation():
    with pytest.raises(contract.ContractViolation, match="status 500"):
        check_rec(rec_body([]), status=500)


def test_substitutes_must_not_be_other_out_of_stock_items():
    body = enc({"decision_id": "d", "model_version": "v", "fallback": None,
                "substitutions": [{"product_id": 1, "candidates": [item(2)]}]})
    with pytest.raises(contract.ContractViolation, match="must not be offered"):
        contract.check_substitutions(200, body, k=3, asked=[1, 2])
    assert contract.check_substitutions(200, body, k=3, asked=[1]).substitutions[0].candidates[0].product_id == 2


def test_coupon_actions_name_their_campaign():
    body = enc({"decision_id": "d", "model_version": "v", "fallback": None,
                "actions": [{"action_type": "coupon", "score": 0.3, "rationale": "you buy this brand"}]})
    with pytest.raises(contract.ContractViolation, match="campaign_id"):
        contract.check_next_best_actions(200, body, k=3)


def test_events_must_all_be_accepted_with_202():
    assert contract.check_accepted(202, b'{"accepted": 3}', sent=3).accepted == 3
    with pytest.raises(contract.ContractViolation, match="accepted=2"):
        contract.check_accepted(202, b'{"accepted": 2}', sent=3)
    with pytest.raises(contract.ContractViolation, match="status 200"):
        contract.check_accepted(200, b'{"accepted": 3}', sent=3)

