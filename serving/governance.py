"""What /admin/ does: campaign approvals (merchandisers) and model switches (ML engineers), each recorded in the
audit log (pantry/audit.py) with who (the key id), what, when, before and after."""

from __future__ import annotations

import asyncio

import msgspec

from pantry import audit
from pantry.keys import CAMPAIGN_APPROVALS
from pantry.models import registry
from pantry.schemas import CampaignApproval, ModelVersions
from pantry.scoring import MODEL_NAMES
from serving import audit_log
from serving.campaigns import Status, approval_record, decode_approvals, encode_approval, status_of
from serving.services import Services

_ACTIONS = {"approved": "campaign.approve", "rejected": "campaign.reject"}


class UnknownCampaign(LookupError):
    pass


class UnknownModel(LookupError):
    pass


def campaign_view(svc: Services, campaign_id: int) -> CampaignApproval:
    c = svc.campaigns.campaigns[campaign_id]
    a = svc.campaigns.approvals.get(campaign_id)
    status = status_of(c, a)
    current = a if status != "pending" else None
    return CampaignApproval(c.campaign_id, c.campaign_type, c.start.date().isoformat(), c.end.date().isoformat(),
                            status, current.by if current else None, current.at if current else None,
                            current.note if current else None)


async def campaign_views(svc: Services) -> list[CampaignApproval]:
    await svc.refresh_approvals()
    return [campaign_view(svc, cid) for cid in sorted(svc.campaigns.campaigns)]


async def decide_campaign(svc: Services, campaign_id: int, status: Status, by: str,
                          note: str | None) -> CampaignApproval:
    """Approve or reject the campaign as it is now (the approval carries its fingerprint)."""
    campaign = svc.campaigns.campaigns.get(campaign_id)
    if campaign is None:
        raise UnknownCampaign(f"no campaign {campaign_id}")
    record = approval_record(campaign, status, by, note)
    # the decision in Redis now (this worker's copy can be a second old when another worker just decided)
    raw = await svc.store.call(lambda: svc.redis.hget(CAMPAIGN_APPROVALS, str(campaign_id)))
    before = decode_approvals({str(campaign_id).encode(): raw}).get(campaign_id) if raw else None
    entry = audit.entry(by, _ACTIONS[status], f"campaign:{campaign_id}",
                        before=msgspec.to_builtins(before) if before else None, after=msgspec.to_builtins(record),
                        note=note)

    async def write() -> None:
        # the current state (fast reads) and its history entry together: one MULTI/EXEC on one Redis
        pipe = svc.redis.pipeline(transaction=not svc.settings.redis_cluster)
        pipe.hset(CAMPAIGN_APPROVALS, str(campaign_id), encode_approval(record))
        pipe.xadd(*audit.xadd_args(entry))
        await pipe.execute()

    await svc.store.call(write)
    svc.campaigns.approvals = {**svc.campaigns.approvals, campaign_id: record}
    return campaign_view(svc, campaign_id)


def model_view(svc: Services, name: str) -> ModelVersions:
    models_dir = svc.settings.models_dir
    return ModelVersions(name, registry.active_version(models_dir, name), svc.models.current.versions().get(name),
                         registry.versions(models_dir, name))


def _check(name: str) -> None:
    if name not in MODEL_NAMES:
        raise UnknownModel(f"no model {name!r} (have: {', '.join(MODEL_NAMES)})")


async def activate_model(svc: Services, name: str, version: str, by: str) -> ModelVersions:
    """Verify the version (every file's sha256) and make it ACTIVE; this worker reloads now, the others within a
    second (serving.models). Raises ModelError for a version that is missing or corrupt."""
    _check(name)
    before = registry.active_version(svc.settings.models_dir, name)
    await asyncio.to_thread(registry.activate, svc.settings.models_dir, name, version)
    await audit_log.record(svc, audit.entry(by, "model.activate", f"model:{name}", before=before, after=version))
    await asyncio.to_thread(svc.models.load_now)
    return model_view(svc, name)


async def rollback_model(svc: Services, name: str, by: str) -> ModelVersions:
    _check(name)
    before = registry.active_version(svc.settings.models_dir, name)
    after = await asyncio.to_thread(registry.rollback, svc.settings.models_dir, name)
    await audit_log.record(svc, audit.entry(by, "model.rollback", f"model:{name}", before=before, after=after))
    await asyncio.to_thread(svc.models.load_now)
    return model_view(svc, name)
