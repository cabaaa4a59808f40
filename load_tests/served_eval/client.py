"""Asking a served pantry for every case, as a client would: POST /v1/... with the demo's client key and `as_of`.

Each answer is decoded and checked by the HTTP contract (load_tests/contract.py). A 503 (the request timeout) or a
`store_unavailable` answer (the per-request Redis budget on a busy machine) is asked again, up to RETRIES times;
how many were is reported. Everything else, fallbacks included, is the answer as served.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import httpx
from tqdm import tqdm

from load_tests import contract
from load_tests.served_eval.service import Served
from training.served_cases import NBA_K, REC_K, NbaCases, RecCases, SubCases, day_time

CONCURRENCY = 4  # requests in flight: the service has 2 workers on a 2-core machine
RETRIES = 3
SUB_ASK_K = 20  # the deepest list the API gives; its first SUB_K are the k=3 answer (one ranking, cut at k)


@dataclass
class Answer:
    items: list[int]  # product ids (coupon_upc for next-best-action coupons, -1 for other actions), best first
    fallback: str | None
    model_version: str
    retries: int


@dataclass
class Asked:
    path: str
    body: dict
    parse: object  # (status, body bytes) -> (item ids, fallback, model_version); raises ContractViolation


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _substitutions(usual: int):
    def parse(status: int, body: bytes):
        answer = contract.check_substitutions(status, body, k=SUB_ASK_K, asked=[usual])
        items = [c.product_id for s in answer.substitutions if s.product_id == usual for c in s.candidates]
        return items, answer.fallback, answer.model_version
    return parse


def _recommendations(status: int, body: bytes):
    answer = contract.check_recommendations(status, body, k=REC_K, surface="for_you", exclude=(), bought=())
    return [i.product_id for i in answer.items], answer.fallback, answer.model_version


def _next_best_action(status: int, body: bytes):
    answer = contract.check_next_best_actions(status, body, k=NBA_K)
    items = [a.coupon_upc if a.action_type == "coupon" and a.coupon_upc is not None else -1 for a in answer.actions]
    return items, answer.fallback, answer.model_version


def substitution_requests(cases: SubCases) -> list[Asked]:
    return [Asked("/v1/substitutions", {"customer_id": int(c), "store_id": int(max(s, 0)), "product_ids": [int(u)],
                                        "k": SUB_ASK_K, "as_of": _iso(day_time(float(d)))}, _substitutions(int(u)))
            for c, s, u, d in zip(cases.customer_id, cases.store_id, cases.usual, cases.day, strict=True)]


def recommendation_requests(cases: RecCases, cut: datetime, with_store: bool) -> list[Asked]:
    out = []
    for c, s in zip(cases.customer_id, cases.store_id, strict=True):
        body = {"customer_id": int(c), "k": REC_K, "as_of": _iso(cut)}
        if with_store and s >= 0:
            body["store_id"] = int(s)
        out.append(Asked("/v1/recommendations", body, _recommendations))
    return out


def nba_requests(cases: NbaCases) -> list[Asked]:
    return [Asked("/v1/next-best-action", {"customer_id": int(c), "k": NBA_K, "channel": "app",
                                           "as_of": _iso(day_time(float(d)))}, _next_best_action)
            for c, d in zip(cases.customer_id, cases.day, strict=True)]


async def _ask_all(served: Served, asked: list[Asked], desc: str) -> list[Answer]:
    gate = asyncio.Semaphore(CONCURRENCY)
    bar = tqdm(total=len(asked), desc=desc, unit="req", leave=False)
    headers = {"X-API-Key": served.client_key}
    async with httpx.AsyncClient(base_url=served.base_url, headers=headers, timeout=30.0) as client:

        async def one(a: Asked) -> Answer:
            async with gate:
                for attempt in range(RETRIES + 1):
                    resp = await client.post(a.path, json=a.body)
                    if resp.status_code == 503 and attempt < RETRIES:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    items, fallback, version = a.parse(resp.status_code, resp.content)
                    if fallback == "store_unavailable" and attempt < RETRIES:
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    break
                bar.update()
                return Answer(items, fallback, version, attempt)

        try:
            return list(await asyncio.gather(*(one(a) for a in asked)))
        finally:
            bar.close()


def ask_all(served: Served, asked: list[Asked], desc: str) -> list[Answer]:
    return asyncio.run(_ask_all(served, asked, desc))
