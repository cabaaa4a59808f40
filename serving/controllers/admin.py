"""/admin/campaigns (merchandiser), /admin/models (ml_engineer), /admin/audit and /admin/customers (admin). Keys and
scopes are checked by the app-level guard (serving/access.py); what the actions do is in serving/governance.py and
pantry/erasure.py, each recorded in the audit log with the key id as actor."""

from __future__ import annotations

import asyncio
from typing import Annotated

import redis
from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody, Parameter

from pantry import erasure
from pantry.schemas import (
    ActivateRequest,
    ApprovalRequest,
    AuditPage,
    CampaignApproval,
    CustomerForgotten,
    ModelVersions,
)
from pantry.scoring import MODEL_NAMES
from serving import audit_log, governance
from serving.access import actor
from serving.redis_guard import StoreUnavailable
from serving.services import Injected


class AdminCampaignsController(Controller):
    path = "/admin/campaigns"
    tags = ("admin",)

    @get(summary="Every campaign with its approval status")
    async def list_campaigns(self, services: Injected) -> list[CampaignApproval]:
        return await governance.campaign_views(services)

    @post("/{campaign_id:int}/approve", status_code=200, summary="Approve a campaign as it is now")
    async def approve(self, campaign_id: FromPath[int], request: Request, services: Injected,
                      data: JSONBody[ApprovalRequest | None] = None) -> CampaignApproval:
        return await governance.decide_campaign(services, campaign_id, "approved", actor(request),
                                                data.note if data else None)

    @post("/{campaign_id:int}/reject", status_code=200, summary="Reject a campaign (never offered)")
    async def reject(self, campaign_id: FromPath[int], request: Request, services: Injected,
                     data: JSONBody[ApprovalRequest | None] = None) -> CampaignApproval:
        return await governance.decide_campaign(services, campaign_id, "rejected", actor(request),
                                                data.note if data else None)


class AdminModelsController(Controller):
    path = "/admin/models"
    tags = ("admin",)

    @get(summary="Model versions: available, ACTIVE on disk, loaded in this worker")
    async def list_models(self, services: Injected) -> list[ModelVersions]:
        return [governance.model_view(services, name) for name in MODEL_NAMES]

    @post("/{name:str}/activate", status_code=200, summary="Serve a version (verified, hot-reloaded everywhere)")
    async def activate(self, name: FromPath[str], data: JSONBody[ActivateRequest], request: Request,
                       services: Injected) -> ModelVersions:
        return await governance.activate_model(services, name, data.version, actor(request))

    @post("/{name:str}/rollback", status_code=200, summary="Switch back to the previously active version")
    async def rollback(self, name: FromPath[str], request: Request, services: Injected) -> ModelVersions:
        return await governance.rollback_model(services, name, actor(request))


class AdminAuditController(Controller):
    path = "/admin/audit"
    tags = ("admin",)

    @get(summary="The audit log, oldest first, one page at a time")
    async def audit(
        self,
        services: Injected,
        after: Annotated[str | None, Parameter(pattern=r"^\d{1,20}-\d{1,20}$",
                                               description="the `next_after` of the previous page")] = None,
        limit: Annotated[int, Parameter(ge=1, le=audit_log.PAGE_MAX)] = 100,
    ) -> AuditPage:
        return await audit_log.page(services, after, limit)


class AdminCustomersController(Controller):
    path = "/admin/customers"
    tags = ("admin",)

    @post("/{customer_id:int}/forget", status_code=200,
          summary="Erase a customer from every store (online rows, logs, events, models); later answers: cold_start")
    async def forget(self, customer_id: Annotated[int, Parameter(ge=0, le=2**62)], request: Request,
                     services: Injected) -> CustomerForgotten:
        reader = services.reader
        try:
            removed = await asyncio.to_thread(erasure.forget, services.settings, customer_id, actor(request),
                                              layout=reader.layout if reader is not None else None)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(f"erasure not completed (run it again): {exc}") from exc
        services.models.set_erased(services.models.erased | {customer_id})  # this worker at once; others poll
        return CustomerForgotten(customer_id, removed)
