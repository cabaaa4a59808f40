"""Experiments: a treatment version of a model against its ACTIVE version (the control), on a share of customers.

The record (`Experiment`) lives in Redis (pantry.keys.EXPERIMENTS, msgpack per id) with the running experiment of
each model in EXPERIMENTS_RUNNING (at most one per model). Every change is a compare-and-set in one Lua call
(`CREATE_SCRIPT`, `UPDATE_SCRIPT`): a guardrail stop in one worker and a promote through another cannot both win.

Assignment is a stable hash: bucket = blake2b(salt:customer_id) mod 10,000, treatment when bucket < share x 10,000.
A customer's arm never changes while the share is fixed, and a larger share (the canary ramp) only moves customers
from control to treatment, never back. The salt is per experiment, so two experiments do not split the same way.

Nothing here touches Redis: callers run the scripts with their (sync or async) client.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from typing import Annotated, Literal

import msgspec

from pantry.settings import Settings

BUCKETS = 10_000
Status = Literal["running", "promoted", "stopped"]
Arm = Literal["control", "treatment"]
Share = Annotated[float, msgspec.Meta(gt=0.0, le=1.0)]


class Guardrails(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When the treatment is stopped (pantry/guardrails.py). Defaults: Settings' guardrail_* block."""

    min_decisions: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 200
    max_fallback_increase: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.05
    max_p99_ms: Annotated[float, msgspec.Meta(gt=0.0, le=60_000.0)] = 250.0
    max_p99_factor: Annotated[float, msgspec.Meta(ge=1.0, le=1000.0)] = 3.0
    max_p_value: Annotated[float, msgspec.Meta(gt=0.0, lt=1.0)] = 0.001
    min_impressions: Annotated[int, msgspec.Meta(ge=1, le=100_000_000)] = 500


class Experiment(msgspec.Struct, kw_only=True):
    id: str
    model: str
    control: str  # the ACTIVE version when the experiment was created
    treatment: str
    share: float  # the treatment's share now (the ramp's current stage when there is a ramp)
    ramp: list[float] = msgspec.field(default_factory=list)  # shares, increasing; [] = a fixed share
    stage: int = 0  # index into ramp
    stage_started_at: float = 0.0  # epoch seconds
    stage_start_decisions: int = 0  # treatment decisions counted when the stage began
    stage_min_decisions: int = 500
    stage_min_seconds: float = 60.0
    guardrails: Guardrails = msgspec.field(default_factory=Guardrails)
    status: Status = "running"
    reason: str = ""
    created_at: float = 0.0
    created_by: str = ""
    ended_at: float | None = None
    ended_by: str = ""
    salt: str = ""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def threshold(self) -> int:
        """Buckets below this are the treatment's."""
        return round(self.share * BUCKETS)


def default_guardrails(settings: Settings) -> Guardrails:
    return Guardrails(min_decisions=settings.guardrail_min_decisions,
                      max_fallback_increase=settings.guardrail_max_fallback_increase,
                      max_p99_ms=settings.guardrail_max_p99_ms, max_p99_factor=settings.guardrail_max_p99_factor,
                      max_p_value=settings.guardrail_max_p_value, min_impressions=settings.guardrail_min_impressions)


def new_experiment(*, model: str, control: str, treatment: str, share: float, ramp: list[float],
                   guardrails: Guardrails, stage_min_decisions: int, stage_min_seconds: float, by: str,
                   now: float | None = None) -> Experiment:
    now = time.time() if now is None else now
    return Experiment(id=f"exp-{int(now)}-{secrets.token_hex(3)}", model=model, control=control, treatment=treatment,
                      share=ramp[0] if ramp else share, ramp=list(ramp), stage=0, stage_started_at=now,
                      stage_min_decisions=stage_min_decisions, stage_min_seconds=stage_min_seconds,
                      guardrails=guardrails, created_at=now, created_by=by, salt=secrets.token_hex(8))


def check_ramp(share: float | None, ramp: list[float]) -> str | None:
    """What is wrong with a requested share/ramp (None: fine)."""
    if ramp:
        if any(not 0.0 < s <= 1.0 for s in ramp):
            return f"every ramp share must be in (0, 1]; got {ramp}"
        if any(b <= a for a, b in itertools.pairwise(ramp)):
            return f"the ramp's shares must increase; got {ramp}"
        if share is not None and share != ramp[0]:
            return f"share {share} differs from the ramp's first stage {ramp[0]}: give one or the other"
        return None
    if share is None:
        return "give `share` (in (0, 1]) or a `ramp`"
    if not 0.0 < share <= 1.0:
        return f"share must be in (0, 1]; got {share}"
    return None


def bucket(salt: str, customer_id: int) -> int:
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def arm_of(experiment: Experiment, customer_id: int) -> Arm:
    return "treatment" if bucket(experiment.salt, customer_id) < experiment.threshold else "control"


# ---- storage ------------------------------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Experiment)


def encode(experiment: Experiment) -> bytes:
    return _encoder.encode(experiment)


def decode(raw: bytes) -> Experiment:
    return _decoder.decode(raw)


def decode_all(raw: dict[bytes, bytes]) -> list[Experiment]:
    """An HGETALL of EXPERIMENTS, newest first."""
    return sorted((decode(v) for v in raw.values()), key=lambda e: e.created_at, reverse=True)


def ended(experiment: Experiment, status: Status, reason: str, by: str, now: float | None = None) -> Experiment:
    return msgspec.structs.replace(experiment, status=status, reason=reason, ended_by=by,
                                   ended_at=time.time() if now is None else now)


def expired(experiment: Experiment, retention_days: float, now: float) -> bool:
    """An ended experiment past its retention: its record is deleted (running ones never are)."""
    return experiment.ended_at is not None and now - experiment.ended_at > retention_days * 86_400.0


# KEYS: EXPERIMENTS, EXPERIMENTS_RUNNING; ARGV: id, model, encoded. Returns nil when created, else the id of the
# experiment already running for that model.
CREATE_SCRIPT = """
local current = redis.call('HGET', KEYS[2], ARGV[2])
if current then return current end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return false
"""

# KEYS: EXPERIMENTS, EXPERIMENTS_RUNNING; ARGV: id, expected encoded record, new encoded record, model whose running
# entry to clear when it is this id ('' to keep it). Returns 1 when written, 0 when the record had changed meanwhile.
UPDATE_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] ~= '' and redis.call('HGET', KEYS[2], ARGV[4]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[4]) end
return 1
"""
