"""Forgetting a customer: one function (`forget`) that `pantry customers forget ID` and
`POST /admin/customers/{id}/forget` both call.

It removes the customer, in this order, from:
1. serving's view of the models: the id joins pantry.keys.ERASED_CUSTOMERS first, so every serving worker stops
   using the customer's model rows within its next poll (~0.5 s), before anything else is touched;
2. the online store: the Feast hash of every customer-keyed view (the views come from the Feast registry's layout);
3. the decision log, the dead letters and the not-yet-trimmed entries of the event stream, every partition of it
   (XDEL of every entry whose request / payload names the customer);
4. the offline feature log, the live flow's event archive (pantry/event_archive.py) and the data set's parquet files
   (every file with a `customer_id` column is rewritten without the customer's rows: a temp file in the same
   directory, then os.replace);
5. the model artifacts: the per-customer rows of every version of every model (ALS user factors, purchase
   history, coupon affinities, ...: CUSTOMER_ROWS), rewritten with the manifest's sha256 updated
   (docs/DECISIONS.md "How does an erasure reach the models?");
and records `customer.forget` in the audit log with the counts per store (never the data).

Idempotent: a second run finds nothing and records counts of 0. Safe while the live flow runs: an event of the
customer already read by the flow may still write rows after the erasure; those, and any later event, are a new
customer relationship (a new profile), not the erased one.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from pantry import audit
from pantry.featurestore.layout import OnlineLayout
from pantry.health import live_flow
from pantry.keys import (
    DEAD_LETTER_STREAM,
    DECISIONS_STREAM,
    ERASED_CUSTOMERS,
    EVENT_FIELD,
    decisions_of,
)
from pantry.partitions import counters_key, events_stream, events_streams, merge_counters, partition_of
from pantry.settings import Settings

log = logging.getLogger("pantry.erasure")

CUSTOMER_KEY = "customer_id"
SCAN_BATCH = 10_000
# An entry {FORGET_FIELD: b"<customer id>"} in the customer's partition of the event stream (pantry/partitions.py,
# where all their events are) tells the live flow to drop the customer's state at that point of the stream: events
# before it were the erased relationship, events after it start a new one.
FORGET_FIELD = b"forget"
FLOW_ACK_WAIT_S = 10.0  # how long the erasure waits for the live flow to pass its marker (no flow: it goes on)
FEATURE_LOG_SETTLE_S = 6.0  # rows the flow buffered before the marker reach the feature log within 5 s


class ErasureError(RuntimeError):
    """The erasure could not be completed (it can be run again: every step is idempotent)."""


# ---- which stream entries name the customer ------------------------------------------------------------------


class _Matcher:
    """Does a stream value (JSON request, msgpack event, a raw or truncated payload) name this customer?"""

    def __init__(self, customer_id: int):
        self.customer_id = customer_id
        self.json = re.compile(rb'"customer_id"\s*:\s*%d(?![0-9.eE])' % customer_id)
        self.msgpack = msgspec.msgpack.encode(CUSTOMER_KEY) + msgspec.msgpack.encode(customer_id)

    def __call__(self, value: bytes | None) -> bool:
        if not value:
            return False
        if self.msgpack in value:
            try:  # confirm on the decoded map when it decodes (a byte match could sit inside another value)
                decoded = msgspec.msgpack.decode(value)
                if isinstance(decoded, dict):
                    return decoded.get(CUSTOMER_KEY) == self.customer_id
            except msgspec.DecodeError:
                return True  # a truncated payload: the bytes are all there is to go by
            return True
        return self.json.search(value) is not None


def _xdel_matching(client, stream: str, fields: tuple[bytes, ...], match: _Matcher) -> int:
    """XDEL every entry of `stream` in which one of `fields` names the customer; returns how many."""
    removed = 0
    start = "-"
    while True:
        chunk = client.xrange(stream, min=start, max="+", count=SCAN_BATCH)
        if not chunk:
            return removed
        ids = [entry_id for entry_id, values in chunk if any(match(values.get(f)) for f in fields)]
        if ids:
            removed += int(client.xdel(stream, *ids))
        last = chunk[-1][0]
        start = "(" + (last.decode() if isinstance(last, bytes) else last)
        if len(chunk) < SCAN_BATCH:
            return removed


# ---- online store ---------------------------------------------------------------------------------------------


def customer_views(layout: OnlineLayout) -> list[str]:
    """The views keyed by the customer alone. A view keyed by the customer AND something else could only be found
    by a SCAN of the whole store: refuse it, so that adding one cannot make erasure silently incomplete."""
    views = []
    for name, view in layout.views.items():
        if CUSTOMER_KEY in view.join_keys:
            if tuple(view.join_keys) != (CUSTOMER_KEY,):
                raise ErasureError(f"feature view {name!r} is keyed by {view.join_keys}: erasure handles views keyed "
                                   f"by {CUSTOMER_KEY} alone")
            views.append(name)
    return views


def _forget_online(client, layout: OnlineLayout, customer_id: int) -> int:
    """Delete the customer's Feast hash(es); returns the number of view rows that were there."""
    from pantry.featurestore.layout import ts_field

    views = customer_views(layout)
    keys = {name: layout.key(name, (customer_id,)) for name in views}
    pipe = client.pipeline(transaction=False)
    for name in views:
        pipe.hexists(keys[name], ts_field(name))
    present = sum(bool(x) for x in pipe.execute())
    if keys:
        client.delete(*set(keys.values()))
    return present


# ---- parquet files --------------------------------------------------------------------------------------------


def _rewrite_parquet(path: Path, customer_id: int) -> int:
    """Rewrite `path` without the customer's rows (atomically); returns the rows removed (0: file untouched)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if CUSTOMER_KEY not in pq.read_schema(path).names:
        return 0
    table = pq.read_table(path)
    column = table.column(CUSTOMER_KEY)
    hit = pc.fill_null(pc.equal(column, pc.cast(customer_id, column.type)), False)
    n = int(pc.sum(hit).as_py() or 0)
    if n == 0:
        return 0
    kept = table.filter(pc.invert(hit))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.erase.tmp")
    pq.write_table(kept, tmp, compression="zstd")
    os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    return n


def _forget_parquet(root: Path, customer_id: int, pattern: str) -> int:
    if not root.exists():
        return 0
    return sum(_rewrite_parquet(p, customer_id) for p in sorted(root.rglob(pattern)) if not p.name.startswith("."))


def _refresh_dataset_manifest(dataset_dir: Path) -> None:
    """The data set's MANIFEST records a digest of events.parquet: keep it true after a rewrite."""
    import hashlib
    import json

    path = dataset_dir / "MANIFEST.json"
    if not path.exists() or not (dataset_dir / "events.parquet").exists():
        return
    manifest = json.loads(path.read_text())
    if "events_sha256" in manifest:
        manifest["events_sha256"] = hashlib.sha256((dataset_dir / "events.parquet").read_bytes()).hexdigest()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        os.replace(tmp, path)


# ---- model artifacts ------------------------------------------------------------------------------------------


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


# The per-customer rows of each model's artifacts (pantry/models): CSR groups `<prefix>_indptr` (one segment per
# customer of `customers.npy`) + `<prefix>_*` entry arrays, and arrays with one row per customer.
CUSTOMER_ROWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "recommender": (("hist",), ("user_factors", "n_baskets", "active_weeks")),
    "substitutions": ((), ("user_factors", "private_share")),
    "next_best_action": (("pair", "enr", "nudge"), ("customer_baskets", "customer_redemptions")),
}


def _forget_model_version(directory: Path, model: str, customer_id: int) -> int:
    """Cut the customer's segments out of the version's per-customer CSR groups and zero their per-customer rows
    (the id stays in customers.npy, with nothing behind it); update the manifest's sha256 of the files rewritten.
    Returns 1 if the version knew the customer, else 0."""
    from pantry.models.registry import MANIFEST, read_manifest, sha256_file

    customers_path = directory / "customers.npy"
    if not customers_path.exists():
        return 0
    customers = np.load(customers_path, allow_pickle=False)
    u = int(np.searchsorted(customers, customer_id))
    if u >= len(customers) or int(customers[u]) != customer_id:
        return 0
    csr_groups, row_arrays = CUSTOMER_ROWS[model]
    changed: dict[str, np.ndarray] = {}
    for prefix in csr_groups:
        indptr_path = directory / f"{prefix}_indptr.npy"
        if not indptr_path.exists():
            continue
        indptr = np.load(indptr_path, allow_pickle=False)
        lo, hi = int(indptr[u]), int(indptr[u + 1])
        if hi == lo:
            continue
        for p in sorted(directory.glob(f"{prefix}_*.npy")):
            if p.stem == f"{prefix}_indptr":
                continue
            values = np.load(p, allow_pickle=False)
            if len(values) == int(indptr[-1]):  # one value per entry of the group
                changed[p.stem] = np.delete(values, np.s_[lo:hi], axis=0)
        new_indptr = indptr.copy()
        new_indptr[u + 1:] -= hi - lo
        changed[f"{prefix}_indptr"] = new_indptr
    for name in row_arrays:
        p = directory / f"{name}.npy"
        if p.exists():
            values = np.load(p, allow_pickle=False)
            if u < len(values) and np.any(values[u]):
                values = values.copy()
                values[u] = 0
                changed[name] = values
    if not changed:
        return 1  # known to this version, nothing of theirs left in it (an earlier erasure)
    manifest = read_manifest(directory)
    for name, array in changed.items():
        _save_npy(directory / f"{name}.npy", array)
        manifest.files[f"{name}.npy"] = sha256_file(directory / f"{name}.npy")
    tmp = directory / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    os.replace(tmp, directory / MANIFEST)
    return 1


def _forget_models(models_dir: Path, customer_id: int) -> int:
    """Versions (of any model) that knew the customer."""
    from pantry.models.registry import versions

    return sum(_forget_model_version(models_dir / model / v, model, customer_id)
               for model in CUSTOMER_ROWS for v in versions(models_dir, model))


def _counter(client, name: str, partitions: int) -> float:
    """A counter of the live flow summed over the partitions' gates (one round trip per node)."""
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hgetall(counters_key(p))
    return merge_counters(pipe.execute()).get(name, 0.0)


def _wait(predicate, timeout_s: float, every_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True


# ---- the one entry point --------------------------------------------------------------------------------------


def forget(settings: Settings, customer_id: int, actor: str, *, client=None,
           layout: OnlineLayout | None = None) -> dict[str, int]:
    """Erase `customer_id` from every store (module docstring); returns the count removed per store, also recorded
    in the audit log. `layout`: the Feast layout (None: read from the registry)."""
    from pantry.redis_server import sync_client

    if customer_id < 0:
        raise ErasureError(f"customer id must be >= 0, got {customer_id}")
    if layout is None:
        from pantry.featurestore import repo

        layout = repo.layout(settings)
    customer_views(layout)  # refuse before touching anything if a view cannot be erased
    client = client or sync_client(settings, timeout_s=30.0)
    match = _Matcher(customer_id)
    counts: dict[str, Any] = {}
    client.sadd(ERASED_CUSTOMERS, customer_id)  # serving stops using the model rows first
    n = settings.stream_partitions
    acked = _counter(client, "forgotten", n)
    # every partition: after a change of the partition count, the customer's older entries are in another one
    counts["events"] = sum(_xdel_matching(client, stream, (EVENT_FIELD,), match) for stream in events_streams(n))
    marker = events_stream(partition_of(customer_id, None, n))  # behind the customer's events, in their partition
    client.xadd(marker, {FORGET_FIELD: str(customer_id).encode()})  # the live flow drops its state
    counts["decisions"] = _xdel_matching(client, DECISIONS_STREAM, (b"request",), match)
    client.delete(decisions_of(customer_id))  # the console's index of its decision ids
    counts["dead_letters"] = _xdel_matching(client, DEAD_LETTER_STREAM, (b"e",), match)
    counts["dataset_rows"] = _forget_parquet(settings.dataset_dir, customer_id, "*.parquet")
    if counts["dataset_rows"]:
        _refresh_dataset_manifest(settings.dataset_dir)
    counts["model_versions"] = _forget_models(settings.models_dir, customer_id)
    # The flow's rows of the customer from before the marker may still be on their way to Redis and the feature
    # log: once the flow has passed the marker (and its feature log has written what it held), delete them.
    # No live flow beating (none runs, or it is down): nothing to wait for; a flow started later reads the marker
    # in stream order and drops what its snapshot held of the customer.
    flow = live_flow(client, max_age_s=max(settings.live_max_age_s, FLOW_ACK_WAIT_S), partitions=n)
    beating = flow.heartbeat_age_s is not None and flow.ok
    counts["flow_state"] = int(beating and _wait(lambda: _counter(client, "forgotten", n) > acked, FLOW_ACK_WAIT_S))
    if counts["flow_state"]:
        time.sleep(FEATURE_LOG_SETTLE_S)
    counts["online_rows"] = _forget_online(client, layout, customer_id)
    counts["feature_log_rows"] = _forget_parquet(settings.feature_log_dir, customer_id, "part-*.parquet")
    # the archive's sink writes what it holds when it passes the marker (streaming/event_archive.py); its lock keeps
    # a compaction from writing back rows read before this rewrite
    from pantry.event_archive import locked

    with locked(settings.event_archive_dir):
        counts["archive_rows"] = _forget_parquet(settings.event_archive_dir, customer_id, "part-*.parquet")
    client.xadd(*audit.xadd_args(audit.entry(actor, "customer.forget", f"customer:{customer_id}", after=counts)))
    log.info("customer %d forgotten by %s: %s", customer_id, actor, counts)
    return counts
