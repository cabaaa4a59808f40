"""Campaign governance: what a merchandiser approved, and which campaigns are active at `now`.

Campaign dates and types come from the dataset (campaign_descriptions). Approvals live in Redis
(pantry.keys.CAMPAIGN_APPROVALS: campaign_id -> msgpack record) and carry the fingerprint of the campaign they
approve: a campaign that is new or whose type/dates changed since has no matching approval, so it is pending and
never offered until a merchandiser approves it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal

import msgspec

from pantry import audit, dataset
from pantry.keys import CAMPAIGN_APPROVALS
from pantry.settings import Settings

Status = Literal["approved", "rejected"]


class Campaign(msgspec.Struct, frozen=True):
    campaign_id: int
    campaign_type: str
    start: datetime
    end: datetime

    @property
    def fingerprint(self) -> str:
        raw = f"{self.campaign_id}|{self.campaign_type}|{self.start.isoformat()}|{self.end.isoformat()}"
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def active_at(self, now: datetime) -> bool:
        return self.start <= now <= self.end


class Approval(msgspec.Struct, frozen=True):
    status: Status
    fingerprint: str
    by: str
    at: str
    note: str | None = None
    # the campaign as it was decided (what a merchandiser sees changed since); absent in records written before
    campaign_type: str | None = None
    start_date: str | None = None
    end_date: str | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Approval)


def load_campaigns(settings: Settings) -> dict[int, Campaign]:
    try:
        table = dataset.read_arrow(settings, "campaign_descriptions")
    except (OSError, FileNotFoundError):
        return {}
    out = {}
    for rec in table.select(["campaign_id", "campaign_type", "start_date", "end_date"]).to_pylist():
        start, end = rec["start_date"], rec["end_date"]
        out[int(rec["campaign_id"])] = Campaign(
            int(rec["campaign_id"]), str(rec["campaign_type"]),
            start if start.tzinfo else start.replace(tzinfo=UTC), end if end.tzinfo else end.replace(tzinfo=UTC),
        )
    return out


def encode_approval(approval: Approval) -> bytes:
    return _encoder.encode(approval)


def decode_approvals(raw: dict[bytes, bytes]) -> dict[int, Approval]:
    out = {}
    for key, value in raw.items():
        try:
            out[int(key)] = _decoder.decode(value)
        except (ValueError, msgspec.DecodeError):
            continue  # a foreign or corrupt entry is simply not an approval
    return out


def approval_record(campaign: Campaign, status: Status, by: str, note: str | None = None) -> Approval:
    return Approval(status, campaign.fingerprint, by, datetime.now(UTC).isoformat(), note, campaign.campaign_type,
                    campaign.start.date().isoformat(), campaign.end.date().isoformat())


def changes_since(campaign: Campaign, approval: Approval | None) -> list[str]:
    """What differs between the campaign now and the campaign as last decided (["new campaign"] if never decided)."""
    if approval is None:
        return ["new campaign: never approved or rejected"]
    if approval.fingerprint == campaign.fingerprint:
        return []
    if approval.campaign_type is None:  # a record from before decisions kept the campaign
        return [f"changed since it was {approval.status} on {approval.at[:10]}"]
    out = []
    for what, before, now in (("type", approval.campaign_type, campaign.campaign_type),
                              ("start", approval.start_date, campaign.start.date().isoformat()),
                              ("end", approval.end_date, campaign.end.date().isoformat())):
        if before != now:
            out.append(f"{what}: {before} \u2192 {now}")
    return out or [f"changed since it was {approval.status} on {approval.at[:10]}"]


def status_of(campaign: Campaign, approval: Approval | None) -> str:
    if approval is None or approval.fingerprint != campaign.fingerprint:
        return "pending"
    return approval.status


class CampaignBook:
    """Per worker: the campaigns (static) and the approvals (refreshed from Redis about once a second)."""

    def __init__(self, campaigns: dict[int, Campaign]):
        self.campaigns = campaigns
        self.approvals: dict[int, Approval] = {}

    def refresh(self, raw: dict[bytes, bytes]) -> None:
        self.approvals = decode_approvals(raw)

    def offerable(self, now: datetime) -> frozenset[int]:
        """Active at `now` AND approved for the campaign as it is now."""
        return frozenset(
            cid for cid, c in self.campaigns.items()
            if c.active_at(now) and status_of(c, self.approvals.get(cid)) == "approved"
        )


def seed_historical(client, campaigns: Iterable[Campaign], by: str = "demo-seed", actor: str = "cli:demo-seed") -> int:
    """Approve every campaign of the dataset (the demo's stand-in for a merchandiser's past approvals); each approval
    is in the audit log (`actor`), like one made over /admin."""
    records = {c.campaign_id: approval_record(c, "approved", by, "historical campaign") for c in campaigns}
    if records:
        pipe = client.pipeline(transaction=False)
        pipe.hset(CAMPAIGN_APPROVALS, mapping={str(cid): encode_approval(r) for cid, r in records.items()})
        for cid, r in records.items():
            pipe.xadd(*audit.xadd_args(audit.entry(actor, "campaign.approve", f"campaign:{cid}",
                                                   after=msgspec.to_builtins(r), note="seed --approve-historical")))
        pipe.execute()
    return len(records)
