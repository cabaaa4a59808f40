"""POST /v1/events: validate a batch, then XADD it to the event stream in one transaction; 202 only once written.

All or nothing: one invalid event rejects the batch with every bad event's index and reason (400), so a producer
never has to guess which events went in. Redis down -> 503 and nothing accepted.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body

from pantry.events import InvalidEvent, decode_json, encode_msgpack
from pantry.keys import EVENT_FIELD, EVENTS_STREAM
from serving import metrics
from serving.schemas import EventError, EventsAccepted, EventsRejected


class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    events: list[msgspec.Raw]


_batch_decoder = msgspec.json.Decoder(_RawBatch)


class EventsController(Controller):
    path = "/v1/events"
    tags = ("events",)

    @post(status_code=202, summary="Ingest a batch of events (all-or-nothing)",
          responses={400: ResponseSpec(EventsRejected, description="invalid events, none accepted")})
    async def ingest(
        self,
        request: Request,
        state: State,
        data: Annotated[dict, Body(description='{"events": [event, ...]} — see pantry.events for the types')],
    ) -> Response[EventsAccepted | EventsRejected]:
        svc = state.services
        body = await request.body()
        try:
            batch = _batch_decoder.decode(body)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ValidationException(detail=f'body must be {{"events": [...]}}: {exc}') from exc
        limit = svc.settings.max_events_per_batch
        if len(batch.events) > limit:
            raise ValidationException(detail=f"{len(batch.events)} events in one batch; the limit is {limit}")
        encoded: list[bytes] = []
        errors: list[EventError] = []
        for i, raw in enumerate(batch.events):
            try:
                encoded.append(encode_msgpack(decode_json(raw)))
            except InvalidEvent as exc:
                errors.append(EventError(i, str(exc)))
        if errors:
            metrics.EVENTS_REJECTED.inc(len(errors))
            return Response(EventsRejected(f"{len(errors)} of {len(batch.events)} events are invalid; none accepted",
                                           errors), status_code=400)

        async def write() -> None:
            pipe = svc.redis.pipeline(transaction=True)
            for payload in encoded:
                pipe.xadd(EVENTS_STREAM, {EVENT_FIELD: payload})
            await pipe.execute()

        if encoded:
            await svc.store.call(write)  # StoreUnavailable -> 503 via the app's error mapping
        metrics.EVENTS_ACCEPTED.inc(len(encoded))
        return Response(EventsAccepted(len(encoded)), status_code=202)
