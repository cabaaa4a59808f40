"""Campaigns (merchandiser): the pending queue with what changed since the last decision, approve / reject with a
note (the same serving/governance.py calls as /admin/campaigns, so the same audit entries), and the history."""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Annotated

import msgspec
from litestar import Controller, Request, get, post
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template

from pantry import audit
from pantry.keys import AUDIT_STREAM
from serving import governance
from serving.campaigns import Status, changes_since, status_of
from serving.console.pages import after_action, render
from serving.console.session import console_guard, operator_of
from serving.service_clock import read_clock
from serving.services import Injected, Services

HISTORY_ROWS = 100


class DecisionForm(msgspec.Struct):
    csrf_token: str = ""
    note: Annotated[str, msgspec.Meta(max_length=500)] = ""


class PendingCampaign(msgspec.Struct):
    campaign_id: int
    campaign_type: str
    start_date: str
    end_date: str
    running_now: bool
    changes: list[str]


class HistoryRow(msgspec.Struct):
    at: str
    actor: str
    action: str
    campaign: str
    note: str | None


async def _history(svc: Services) -> list[HistoryRow]:
    """The newest campaign decisions of the audit log (scans at most 20 x HISTORY_ROWS entries back)."""
    raw = await svc.store.call(lambda: svc.redis.xrevrange(AUDIT_STREAM, count=HISTORY_ROWS * 20))
    out = []
    for _, fields in raw:
        e = audit.decode(fields)
        if e.action.startswith("campaign."):
            out.append(HistoryRow(datetime.fromtimestamp(e.at, UTC).strftime("%Y-%m-%d %H:%M:%S"), e.actor,
                                  e.action.removeprefix("campaign."), e.target.removeprefix("campaign:"), e.note))
            if len(out) == HISTORY_ROWS:
                break
    return out


class ConsoleCampaignsController(Controller):
    path = "/console/campaigns"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "merchandiser"})

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        views = await governance.campaign_views(services)  # refreshes this worker's approvals from Redis
        book, now = services.campaigns, (await read_clock(services, last_known=True)).now
        pending = []
        for view in views:
            if view.status == "pending":
                c = book.campaigns[view.campaign_id]
                pending.append(PendingCampaign(view.campaign_id, view.campaign_type, view.start_date, view.end_date,
                                               c.active_at(now), changes_since(c, book.approvals.get(c.campaign_id))))
        decided = [v for v in views if status_of(book.campaigns[v.campaign_id],
                                                 book.approvals.get(v.campaign_id)) != "pending"]
        return render(request, await operator_of(request), "campaigns.html", "Campaigns", pending=pending,
                      decided=decided, history=await _history(services), now=now.date().isoformat())

    @post("/{campaign_id:int}/approve", status_code=303)
    async def approve(self, campaign_id: int, request: Request, services: Injected,
                      data: Annotated[DecisionForm, Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Redirect:
        return await self._decide(request, services, campaign_id, "approved", data)

    @post("/{campaign_id:int}/reject", status_code=303)
    async def reject(self, campaign_id: int, request: Request, services: Injected,
                     data: Annotated[DecisionForm, Body(media_type=RequestEncodingType.URL_ENCODED)]) -> Redirect:
        return await self._decide(request, services, campaign_id, "rejected", data)

    async def _decide(self, request: Request, services: Services, campaign_id: int, status: Status,
                      data: DecisionForm) -> Redirect:
        operator = await operator_of(request)
        await governance.decide_campaign(services, campaign_id, status, operator.key_id, data.note or None)
        return after_action(self.path, status, campaign_id)
