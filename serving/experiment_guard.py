"""The guardrail loop: every guardrail_interval_s one worker (the leader: a Redis SET NX PX lock, renewed while it
lives; another worker takes over within ~3 intervals of its death) reads the KPI totals and, for each running
experiment, stops it on a guardrail breach (pantry/guardrails.py) or advances its canary ramp when the stage's
minimum is met and the guardrails hold. Every change is the same compare-and-set as the endpoints', so a stop here
and a promote there cannot both win. Ended experiments past their retention are deleted here too.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

from pantry import audit, experiments, guardrails
from pantry.keys import EXPERIMENTS, EXPERIMENTS_GUARD_LOCK, EXPERIMENTS_RUNNING
from serving import audit_log, metrics
from serving import experiments as service
from serving.services import Services

log = logging.getLogger("pantry.serving.guardrails")
GUARD_ACTOR = "guardrail"  # the audit log's actor for what the loop does
PRUNE_EVERY_S = 60.0


async def lead(svc: Services, token: str, ttl_ms: int) -> bool:
    """True while this worker holds the lock (taken now, or renewed)."""
    if await svc.store.call(lambda: svc.redis.set(EXPERIMENTS_GUARD_LOCK, token, nx=True, px=ttl_ms)):
        return True
    holder = await svc.store.call(lambda: svc.redis.get(EXPERIMENTS_GUARD_LOCK))
    if holder is not None and holder.decode() == token:
        await svc.store.call(lambda: svc.redis.pexpire(EXPERIMENTS_GUARD_LOCK, ttl_ms))
        return True
    return False


async def check_once(svc: Services, now: float | None = None) -> list[tuple[str, str]]:
    """One pass over the running experiments; returns what it did: [(experiment id, "stopped: ..." | "stage N")]."""
    now = time.time() if now is None else now
    ids = sorted(set((await svc.store.call(lambda: svc.redis.hgetall(EXPERIMENTS_RUNNING))).values()))
    if not ids:
        return []
    raws = [raw for raw in await svc.store.call(lambda: svc.redis.hmget(EXPERIMENTS, ids)) if raw is not None]
    running = [(experiments.decode(raw), raw) for raw in raws]
    running = [(exp, raw) for exp, raw in running if exp.running]
    totals = await service.kpi_totals(svc, {exp.id for exp, _ in running})
    done: list[tuple[str, str]] = []
    for exp, raw in running:
        control, treatment, _versions = guardrails.arm_totals(totals, exp.id)
        breach = guardrails.check(exp, control, treatment)
        if breach is not None:
            reason = f"guardrail {breach.guardrail}: {breach.detail}"
            if await service.end(svc, exp, raw, "stopped", reason, GUARD_ACTOR) is not None:
                metrics.GUARDRAIL_BREACHES.labels(exp.model, breach.guardrail).inc()
                log.warning("experiment %s (%s %s) stopped: %s", exp.id, exp.model, exp.treatment, reason)
                done.append((exp.id, f"stopped: {reason}"))
            continue
        advanced = guardrails.advance(exp, treatment, now)
        if advanced is not None and await service.cas(svc, raw, advanced, clear_running=False):
            await audit_log.record(svc, audit.entry(
                GUARD_ACTOR, "experiment.ramp", f"experiment:{exp.id}", before={"stage": exp.stage, "share": exp.share},
                after={"stage": advanced.stage, "share": advanced.share},
                note=f"stage {exp.stage} met its minimum ({treatment.decisions - exp.stage_start_decisions} "
                     f"treatment decisions, {now - exp.stage_started_at:.0f} s) with the guardrails holding"))
            log.info("experiment %s: ramp stage %d, share %g", exp.id, advanced.stage, advanced.share)
            done.append((exp.id, f"stage {advanced.stage}"))
    return done


async def prune(svc: Services, now: float) -> int:
    raw = await svc.store.call(lambda: svc.redis.hgetall(EXPERIMENTS))
    old = [e.id for e in experiments.decode_all(raw) if experiments.expired(e, svc.settings.experiments_retention_days,
                                                                             now)]
    if old:
        await svc.store.call(lambda: svc.redis.hdel(EXPERIMENTS, *old))
    return len(old)


async def run(svc: Services) -> None:
    """The loop (one per worker; only the leader acts). Never dies."""
    interval = svc.settings.guardrail_interval_s
    token = secrets.token_hex(8)
    ttl_ms = max(int(interval * 3000), 1000)
    last_prune = 0.0
    while True:
        await asyncio.sleep(interval)
        try:
            if not await lead(svc, token, ttl_ms):
                continue
            await check_once(svc)
            now = time.time()
            if now - last_prune >= PRUNE_EVERY_S:
                await prune(svc, now)
                last_prune = now
        except Exception:  # Redis down or a bug: try again next interval
            log.warning("guardrail check failed", exc_info=True)
