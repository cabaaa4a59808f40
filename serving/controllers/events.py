"""POST /v1/events: 202 only once the whole batch is in the event stream (serving/ingest.py).

All or nothing: one invalid event rejects the batch with every bad event's index and reason (400), so a producer
never has to guess which events went in. Redis down -> 503 and nothing accepted by this request. The same batch
posted again is written once (`duplicate: true` in the 202 when another request had written it).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Body

from serving.ingest import ingest
from serving.schemas import EventsAccepted, EventsRejected
from serving.services import Injected


class EventsBody(msgspec.Struct, forbid_unknown_fields=True):
    events: list[Any]  # each validated as a pantry.events.Event, so a bad one is reported by its index


class EventsController(Controller):
    path = "/v1/events"
    tags = ("events",)

    @post(status_code=202, summary="Ingest a batch of events (all-or-nothing)",
          responses={400: ResponseSpec(EventsRejected, description="invalid events, none accepted")})
    async def ingest(
        self,
        data: Annotated[EventsBody, Body(description='{"events": [event, ...]} — see pantry/events.py for the types')],
        services: Injected,
    ) -> EventsAccepted:
        accepted, duplicate = await ingest(services, data.events)
        return EventsAccepted(accepted, duplicate)
