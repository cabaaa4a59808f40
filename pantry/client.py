"""A typed Python client of pantry's HTTP API, sync (`PantryClient`) and async (`AsyncPantryClient`).

Bodies and answers are the msgspec structs the server itself validates and returns (pantry/schemas.py), so a
client and the server cannot drift apart. Each call has a timeout; a 429 or 503 answer and a connection error are
retried with exponential backoff (a 429/503's `Retry-After` is honoured), which is safe: answers are reads, an
event batch posted twice is written once (serving/ingest.py), and a preferences PUT replaces the whole set. Any
other non-2xx answer raises `PantryError` with the server's RFC 9457 problem detail.

    from pantry.client import PantryClient

    with PantryClient("http://127.0.0.1:8000", api_key=os.environ["PANTRY_CLIENT_KEY"]) as pantry:
        answer = pantry.recommendations(customer_id=1, store_id=367, k=5)
        for item in answer.items:
            print(item.product_id, item.score, item.reason)

`Call` is one request as data (method, path, body, how to decode the answer): the clients send them, and so do
drivers with their own HTTP stack (the Locust users send a `Call`'s body through Locust's session and decode the
answer with it).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
import msgspec

from pantry.events import Event
from pantry.schemas import (
    CustomerPreferences,
    EventsAccepted,
    FeaturesRequest,
    FeaturesResponse,
    NextBestActionRequest,
    NextBestActionResponse,
    Problem,
    RecommendationRequest,
    RecommendationResponse,
    ServiceClock,
    StoredPreferences,
    SubstitutionRequest,
    SubstitutionResponse,
)
from pantry.scoring import Channel, Surface

T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 503})
_encode = msgspec.json.Encoder().encode
_problem = msgspec.json.Decoder(Problem)


class EventsBody(msgspec.Struct):
    events: Sequence[Event]


class PantryError(Exception):
    """A non-2xx answer (after retries, for 429 and 503): `status` and the server's `problem` detail."""

    def __init__(self, status: int, problem: Problem | None, body: bytes):
        self.status, self.problem, self.body = status, problem, body
        super().__init__(f"{status}: {problem.detail if problem else body[:200].decode(errors='replace')}")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: `decode` turns a 2xx body into the answer's struct."""

    method: str
    path: str
    body: bytes | None
    decode: Callable[[bytes], T]

    def answer(self, status: int, body: bytes) -> T:
        """The decoded answer of a 2xx, else PantryError."""
        if 200 <= status < 300:
            return self.decode(body)
        raise PantryError(status, _problem_of(body), body)


def _problem_of(body: bytes) -> Problem | None:
    try:
        return _problem.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    return msgspec.json.Decoder(kind).decode


_DECODE = {kind: _decoder(kind) for kind in (RecommendationResponse, SubstitutionResponse, NextBestActionResponse,
                                             FeaturesResponse, EventsAccepted, ServiceClock, StoredPreferences)}


# ---- the calls, as data -----------------------------------------------------------------------------------------


def recommendations(customer_id: int, *, store_id: int | None = None, k: int = 10, surface: Surface = "for_you",
                    exclude_product_ids: Iterable[int] = (), as_of: datetime | None = None
                    ) -> Call[RecommendationResponse]:
    body = RecommendationRequest(customer_id=customer_id, store_id=store_id, k=k, surface=surface,
                                 exclude_product_ids=list(exclude_product_ids), as_of=as_of)
    return Call("POST", "/v1/recommendations", _encode(body), _DECODE[RecommendationResponse])


def substitutions(customer_id: int, store_id: int, product_ids: Iterable[int], *, k: int = 3,
                  as_of: datetime | None = None) -> Call[SubstitutionResponse]:
    body = SubstitutionRequest(customer_id=customer_id, store_id=store_id, product_ids=list(product_ids), k=k,
                               as_of=as_of)
    return Call("POST", "/v1/substitutions", _encode(body), _DECODE[SubstitutionResponse])


def next_best_action(customer_id: int, *, store_id: int | None = None, channel: Channel = "app", k: int = 3,
                     as_of: datetime | None = None) -> Call[NextBestActionResponse]:
    body = NextBestActionRequest(customer_id=customer_id, store_id=store_id, channel=channel, k=k, as_of=as_of)
    return Call("POST", "/v1/next-best-action", _encode(body), _DECODE[NextBestActionResponse])


def features(entities: Mapping[str, Sequence[int]], *, feature_service: str | None = None,
             features: Sequence[str] = ()) -> Call[FeaturesResponse]:
    body = FeaturesRequest(entities={k: list(v) for k, v in entities.items()}, feature_service=feature_service,
                           features=list(features))
    return Call("POST", "/v1/features", _encode(body), _DECODE[FeaturesResponse])


def send_events(events: Sequence[Event]) -> Call[EventsAccepted]:
    return Call("POST", "/v1/events", _encode(EventsBody(events)), _DECODE[EventsAccepted])


def clock() -> Call[ServiceClock]:
    return Call("GET", "/v1/clock", None, _DECODE[ServiceClock])


def set_preferences(customer_id: int, preferences: CustomerPreferences) -> Call[StoredPreferences]:
    return Call("PUT", f"/v1/customers/{int(customer_id)}/preferences", _encode(preferences),
                _DECODE[StoredPreferences])


def preferences(customer_id: int) -> Call[StoredPreferences]:
    return Call("GET", f"/v1/customers/{int(customer_id)}/preferences", None, _DECODE[StoredPreferences])


# ---- the clients ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retry:
    """How 429/503 answers and connection errors are retried: up to `attempts` sends in all, waiting `backoff_s`
    doubled each time (with jitter) up to `max_backoff_s`, or the answer's Retry-After if it says (capped there)."""

    attempts: int = 3
    backoff_s: float = 0.1
    max_backoff_s: float = 2.0

    def wait_s(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("retry-after") if response is not None else None
        if after is not None:
            try:
                return min(max(float(after), 0.0), self.max_backoff_s)
            except ValueError:
                pass  # an HTTP date: use the backoff
        return min(self.backoff_s * 2 ** attempt * (0.5 + random.random() / 2), self.max_backoff_s)


NO_RETRY = Retry(attempts=1)


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


class PantryClient:
    """Blocking client (httpx). Use as a context manager, or call `close()`. Each method takes the arguments of the
    module's function of the same name; `send` takes any `Call`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 5.0, retry: Retry = Retry(),
                 http: httpx.Client | None = None):
        self.http = http or httpx.Client(base_url=base_url, timeout=timeout_s)
        self.headers, self.retry = _headers(api_key), retry

    def send(self, call: Call[T]) -> T:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = self.http.request(call.method, call.path, content=call.body, headers=self.headers)
            except httpx.TransportError:
                if last:
                    raise
                time.sleep(self.retry.wait_s(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                time.sleep(self.retry.wait_s(attempt, response))
                continue
            return call.answer(response.status_code, response.content)
        raise AssertionError("unreachable")

    def recommendations(self, customer_id: int, **kw: Any) -> RecommendationResponse:
        return self.send(recommendations(customer_id, **kw))

    def substitutions(self, customer_id: int, store_id: int, product_ids: Iterable[int],
                      **kw: Any) -> SubstitutionResponse:
        return self.send(substitutions(customer_id, store_id, product_ids, **kw))

    def next_best_action(self, customer_id: int, **kw: Any) -> NextBestActionResponse:
        return self.send(next_best_action(customer_id, **kw))

    def features(self, entities: Mapping[str, Sequence[int]], **kw: Any) -> FeaturesResponse:
        return self.send(features(entities, **kw))

    def send_events(self, events: Sequence[Event]) -> EventsAccepted:
        return self.send(send_events(events))

    def clock(self) -> ServiceClock:
        return self.send(clock())

    def set_preferences(self, customer_id: int, preferences: CustomerPreferences) -> StoredPreferences:
        return self.send(set_preferences(customer_id, preferences))

    def preferences(self, customer_id: int) -> StoredPreferences:
        return self.send(preferences(customer_id))

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> PantryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncPantryClient:
    """asyncio client (httpx). Use as an async context manager, or await `aclose()`. Each method takes the
    arguments of the module's function of the same name; `send` takes any `Call`."""

    def __init__(self, base_url: str, api_key: str | None = None, *, timeout_s: float = 5.0, retry: Retry = Retry(),
                 http: httpx.AsyncClient | None = None):
        self.http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout_s)
        self.headers, self.retry = _headers(api_key), retry

    async def send(self, call: Call[T]) -> T:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                response = await self.http.request(call.method, call.path, content=call.body, headers=self.headers)
            except httpx.TransportError:
                if last:
                    raise
                await asyncio.sleep(self.retry.wait_s(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and not last:
                await asyncio.sleep(self.retry.wait_s(attempt, response))
                continue
            return call.answer(response.status_code, response.content)
        raise AssertionError("unreachable")

    async def recommendations(self, customer_id: int, **kw: Any) -> RecommendationResponse:
        return await self.send(recommendations(customer_id, **kw))

    async def substitutions(self, customer_id: int, store_id: int, product_ids: Iterable[int],
                            **kw: Any) -> SubstitutionResponse:
        return await self.send(substitutions(customer_id, store_id, product_ids, **kw))

    async def next_best_action(self, customer_id: int, **kw: Any) -> NextBestActionResponse:
        return await self.send(next_best_action(customer_id, **kw))

    async def features(self, entities: Mapping[str, Sequence[int]], **kw: Any) -> FeaturesResponse:
        return await self.send(features(entities, **kw))

    async def send_events(self, events: Sequence[Event]) -> EventsAccepted:
        return await self.send(send_events(events))

    async def clock(self) -> ServiceClock:
        return await self.send(clock())

    async def set_preferences(self, customer_id: int, preferences: CustomerPreferences) -> StoredPreferences:
        return await self.send(set_preferences(customer_id, preferences))

    async def preferences(self, customer_id: int) -> StoredPreferences:
        return await self.send(preferences(customer_id))

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncPantryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
