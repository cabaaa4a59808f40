"""POST /v1/events: 202 only once the whole batch is in the event stream (serving/ingest.py).

All or nothing: one invalid event rejects the batch with every bad event's index and reason (400), so a producer
never has to guess which events went in. Redis down -> 503 and nothing accepted by this request. The same batch
posted again is written once (`duplicate: true` in the 202 when another request had written it).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body, SkipValidation

from pantry.events import Event
from pantry.schemas import EventsAccepted, Problem
from serving.ingest import ingest
from serving.services import Injected


class EventsBatch(msgspec.Struct, forbid_unknown_fields=True):
    """What the OpenAPI schema shows: the typed events (pantry/events.py), so a client can be generated from it."""
    events: Annotated[list[Event], msgspec.Meta(max_length=1000)]


class _EventsBody(msgspec.Struct, forbid_unknown_fields=True):
    """What the handler checks first: the batch's shape; then each event on its own (serving/ingest.py), so that
    every bad event is reported by its index, not only the first."""
    events: list[Any]


class EventsController(Controller):
    path = "/v1/events"
    tags = ("events",)

    @post(status_code=202, summary="Ingest a batch of events (all-or-nothing)",
          responses={400: ResponseSpec(Problem, description="invalid events, none accepted: `errors` names each",
                                       media_type="application/problem+json")})
    async def ingest(
        self,
        data: Annotated[SkipValidation[EventsBatch], Body(description="a batch of events (see pantry/events.py)")],
        services: Injected,
    ) -> EventsAccepted:
        try:
            batch = msgspec.convert(data, _EventsBody)
        except msgspec.ValidationError as exc:
            raise ValidationException(detail=f"Validation failed for POST /v1/events: {exc}") from None
        accepted, duplicate = await ingest(services, batch.events)
        return EventsAccepted(accepted, duplicate)
