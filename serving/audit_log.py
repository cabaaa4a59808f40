"""Serving's side of the audit log (pantry/audit.py is the contract): write an admin action's entry, read pages.

Campaign decisions write the approval and its audit entry in one MULTI/EXEC (one pipeline per node on a Redis
Cluster, where the two keys live in different slots). Model switches are files: the entry is written after the
switch; if Redis is down then, the entry goes to the error log in full (nothing is switched back).
"""

from __future__ import annotations

import logging

import msgspec

from pantry import audit
from pantry.audit import AuditEntry
from pantry.keys import AUDIT_STREAM
from pantry.schemas import AuditPage, AuditRecord
from serving.redis_guard import StoreUnavailable
from serving.services import Services

log = logging.getLogger("pantry.audit")

PAGE_MAX = 1000


async def record(svc: Services, e: AuditEntry) -> bool:
    """Append `e` (after an action that is already done); False, and the entry in the error log, if Redis is down."""
    try:
        await svc.store.call(lambda: svc.redis.xadd(*audit.xadd_args(e)))
        return True
    except StoreUnavailable:
        log.error("audit entry not written to %s (redis unavailable): %s", AUDIT_STREAM,
                  msgspec.json.encode(e).decode())
        return False


async def page(svc: Services, after: str | None, limit: int) -> AuditPage:
    """Entries oldest first, strictly after the stream id `after` (from the start when None)."""
    limit = max(1, min(limit, PAGE_MAX))
    start = f"({after}" if after else "-"
    chunk = await svc.store.call(lambda: svc.redis.xrange(AUDIT_STREAM, min=start, max="+", count=limit + 1))
    more = len(chunk) > limit
    out = []
    for entry_id, fields in chunk[:limit]:
        e = audit.decode(fields)
        out.append(AuditRecord(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, e.at, e.actor, e.action,
                               e.target, e.before, e.after, e.note))
    return AuditPage(out, out[-1].id if more else None)
