"""A digest of the whole online store: to show that two stores hold the same rows, byte for byte (a replay before
and after a change, a restored backup, a migrated cluster)."""

from __future__ import annotations

import hashlib
from collections import Counter

import msgspec

from pantry.keys import PREFIX

_BATCH = 2000


class OnlineDigest(msgspec.Struct):
    keys: int
    rows: dict[str, int]  # view -> rows (hashes holding its `_ts:<view>` field)
    sha256: str  # over every feature hash: keys sorted, fields sorted, lengths prefixed


def online_digest(client) -> OnlineDigest:
    """Every hash outside pantry's own keys (`pantry:*`) is a Feast row hash: hashed in key order."""
    keys = sorted(k for k in client.scan_iter(count=10_000) if not k.startswith(PREFIX.encode()))
    h = hashlib.sha256()
    rows: Counter[str] = Counter()
    for i in range(0, len(keys), _BATCH):
        chunk = keys[i : i + _BATCH]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.hgetall(key)
        for key, fields in zip(chunk, pipe.execute(), strict=True):
            h.update(len(key).to_bytes(4, "little") + key)
            for field in sorted(fields):
                value = fields[field]
                h.update(len(field).to_bytes(4, "little") + field + len(value).to_bytes(4, "little") + value)
                if field.startswith(b"_ts:"):
                    rows[field[4:].decode()] += 1
    return OnlineDigest(len(keys), dict(sorted(rows.items())), h.hexdigest())
