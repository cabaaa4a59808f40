"""The audit log: who (key id), what, when, before/after, for every admin action, approval and erasure.

One Redis Stream (pantry.keys.AUDIT_STREAM), entries appended and never rewritten: an approval adds an entry, it
does not overwrite the last one. Entries hold ids and settings, never personal data beyond the id acted on.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from pantry.keys import AUDIT_FIELD, AUDIT_STREAM


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    at: float  # epoch seconds (wall clock)
    actor: str  # "<key id>" of the API key, or "cli:<user>" for a command run on the host
    action: str  # e.g. "campaign.approve", "model.activate", "model.rollback", "customer.forget"
    target: str  # what was acted on, e.g. "campaign:18", "model:recommender", "customer:42"
    before: Any = None  # the state before (msgspec builtins), if the action changes one
    after: Any = None
    note: str | None = None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(AuditEntry).decode


def entry(actor: str, action: str, target: str, *, before: Any = None, after: Any = None,
          note: str | None = None) -> AuditEntry:
    return AuditEntry(at=time.time(), actor=actor, action=action, target=target, before=before, after=after,
                      note=note)


def xadd_args(e: AuditEntry) -> tuple[str, dict[bytes, bytes]]:
    """The (stream, fields) of an XADD recording `e`; sync and async clients both call xadd(*xadd_args(e))."""
    return AUDIT_STREAM, {AUDIT_FIELD: _encode(e)}


def decode(fields: dict[bytes, bytes]) -> AuditEntry:
    return _decode(fields[AUDIT_FIELD])


def read_all(client, count: int = 10_000) -> list[tuple[str, AuditEntry]]:
    """Every entry, oldest first, from a sync redis client (for export and tests)."""
    out: list[tuple[str, AuditEntry]] = []
    start = "-"
    while True:
        chunk = client.xrange(AUDIT_STREAM, min=start, max="+", count=count)
        if not chunk:
            return out
        for entry_id, fields in chunk:
            out.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, decode(fields)))
        last = chunk[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)
        if len(chunk) < count:
            return out
