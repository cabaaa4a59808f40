"""Admin under /admin/, behind API keys (header X-API-Key, keys and roles from settings.api_keys).

merchandiser: approve or reject campaigns (nothing is offered before approval). ml_engineer: activate or roll back
model versions (training's registry switches ACTIVE atomically; every worker hot-reloads within about a second).
admin: both. No key -> 401, a key without the role -> 403.
"""

from __future__ import annotations

import asyncio
import hashlib

from litestar import Controller, Request, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.exceptions import NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.exceptions import ValidationException as BadRequest
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, JSONBody

from pantry.keys import CAMPAIGN_APPROVALS
from pantry.scoring import MODEL_NAMES, ModelError
from serving.campaigns import approval_record, encode_approval, status_of
from serving.schemas import ActivateRequest, ApprovalRequest, CampaignApproval, ModelVersions


def _role(connection: ASGIConnection) -> tuple[str, str]:
    key = connection.headers.get("x-api-key")
    if not key:
        raise NotAuthorizedException(detail="missing X-API-Key header")
    role = connection.app.state.settings.api_keys.get(key)
    if role is None:
        raise NotAuthorizedException(detail="unknown API key")
    return key, role


def requires(role: str):
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        _, has = _role(connection)
        if has not in (role, "admin"):
            raise PermissionDeniedException(detail=f"this action needs the {role} role; the key has {has}")

    return guard


def _actor(request: Request) -> str:
    key, role = _role(request)
    return f"{role}:{hashlib.sha256(key.encode()).hexdigest()[:8]}"


class AdminCampaignsController(Controller):
    path = "/admin/campaigns"
    tags = ("admin",)
    guards = (requires("merchandiser"),)
    security = ({"apiKey": []},)

    @get(summary="Every campaign with its approval status")
    async def list_campaigns(self, state: State) -> list[CampaignApproval]:
        svc = state.services
        await svc._refresh_approvals()
        return [self._view(svc, cid) for cid in sorted(svc.campaigns.campaigns)]

    @post("/{campaign_id:int}/approve", status_code=200, summary="Approve a campaign as it is now")
    async def approve(self, campaign_id: FromPath[int], request: Request, state: State,
                      data: JSONBody[ApprovalRequest | None] = None) -> CampaignApproval:
        return await self._decide(state, request, campaign_id, "approved", data)

    @post("/{campaign_id:int}/reject", status_code=200, summary="Reject a campaign (never offered)")
    async def reject(self, campaign_id: FromPath[int], request: Request, state: State,
                     data: JSONBody[ApprovalRequest | None] = None) -> CampaignApproval:
        return await self._decide(state, request, campaign_id, "rejected", data)

    async def _decide(self, state: State, request: Request, campaign_id: int, status, data) -> CampaignApproval:
        svc = state.services
        campaign = svc.campaigns.campaigns.get(campaign_id)
        if campaign is None:
            raise NotFoundException(detail=f"no campaign {campaign_id}")
        record = approval_record(campaign, status, _actor(request), data.note if data else None)
        await svc.store.call(lambda: svc.redis.hset(CAMPAIGN_APPROVALS, str(campaign_id), encode_approval(record)))
        svc.campaigns.approvals = {**svc.campaigns.approvals, campaign_id: record}
        return self._view(svc, campaign_id)

    @staticmethod
    def _view(svc, campaign_id: int) -> CampaignApproval:
        c = svc.campaigns.campaigns[campaign_id]
        a = svc.campaigns.approvals.get(campaign_id)
        status = status_of(c, a)
        current = a if status != "pending" else None
        return CampaignApproval(c.campaign_id, c.campaign_type, c.start.date().isoformat(), c.end.date().isoformat(),
                                status, current.by if current else None, current.at if current else None,
                                current.note if current else None)


def _registry():
    try:
        from pantry.models import registry
    except ModuleNotFoundError as exc:
        raise NotFoundException(detail="no model registry (training is not installed)") from exc
    return registry


class AdminModelsController(Controller):
    path = "/admin/models"
    tags = ("admin",)
    guards = (requires("ml_engineer"),)
    security = ({"apiKey": []},)

    @get(summary="Model versions: available, ACTIVE on disk, loaded in this worker")
    async def list_models(self, state: State) -> list[ModelVersions]:
        return [self._view(state, name) for name in MODEL_NAMES]

    @post("/{name:str}/activate", status_code=200, summary="Serve a version (verified, hot-reloaded everywhere)")
    async def activate(self, name: FromPath[str], data: JSONBody[ActivateRequest], state: State) -> ModelVersions:
        registry = self._check(name)
        try:
            await asyncio.to_thread(registry.activate, state.services.settings.models_dir, name, data.version)
        except ModelError as exc:
            raise BadRequest(detail=str(exc)) from exc
        await asyncio.to_thread(state.services.models.load_now)
        return self._view(state, name)

    @post("/{name:str}/rollback", status_code=200, summary="Switch back to the previously active version")
    async def rollback(self, name: FromPath[str], state: State) -> ModelVersions:
        registry = self._check(name)
        try:
            await asyncio.to_thread(registry.rollback, state.services.settings.models_dir, name)
        except ModelError as exc:
            raise BadRequest(detail=str(exc)) from exc
        await asyncio.to_thread(state.services.models.load_now)
        return self._view(state, name)

    @staticmethod
    def _check(name: str):
        if name not in MODEL_NAMES:
            raise NotFoundException(detail=f"no model {name!r} (have: {', '.join(MODEL_NAMES)})")
        return _registry()

    @staticmethod
    def _view(state: State, name: str) -> ModelVersions:
        svc = state.services
        loaded = svc.models.current.versions().get(name)
        try:
            from pantry.models import registry

            return ModelVersions(name, registry.active_version(svc.settings.models_dir, name), loaded,
                                 registry.versions(svc.settings.models_dir, name))
        except ModuleNotFoundError:
            return ModelVersions(name, None, loaded, [])
