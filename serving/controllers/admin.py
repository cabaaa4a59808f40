"""/admin/campaigns (merchandiser) and /admin/models (ml_engineer), behind API keys (serving/auth.py); what they do
is in serving/governance.py."""

from __future__ import annotations

from litestar import Controller, Request, get, post
from litestar.params import FromPath, JSONBody

from pantry.scoring import MODEL_NAMES
from serving import governance
from serving.auth import actor, requires
from serving.schemas import ActivateRequest, ApprovalRequest, CampaignApproval, ModelVersions
from serving.services import Injected


class AdminCampaignsController(Controller):
    path = "/admin/campaigns"
    tags = ("admin",)
    guards = (requires("merchandiser"),)
    security = ({"apiKey": []},)

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
    guards = (requires("ml_engineer"),)
    security = ({"apiKey": []},)

    @get(summary="Model versions: available, ACTIVE on disk, loaded in this worker")
    async def list_models(self, services: Injected) -> list[ModelVersions]:
        return [governance.model_view(services, name) for name in MODEL_NAMES]

    @post("/{name:str}/activate", status_code=200, summary="Serve a version (verified, hot-reloaded everywhere)")
    async def activate(self, name: FromPath[str], data: JSONBody[ActivateRequest], services: Injected) -> ModelVersions:
        return await governance.activate_model(services, name, data.version)

    @post("/{name:str}/rollback", status_code=200, summary="Switch back to the previously active version")
    async def rollback(self, name: FromPath[str], services: Injected) -> ModelVersions:
        return await governance.rollback_model(services, name)
