"""The decision log: every served answer XADDed to pantry:decisions, bounded by count (MAXLEN ~ decisions_maxlen at
every XADD), by age (XTRIM MINID ~ now - decisions_retention_s, every trim_every_s by each worker's flusher) and by
bytes (a JSON field longer than decisions_max_field_bytes is replaced by `{"truncated_bytes": N}`). With each entry,
its id goes to the front of the customer's list of newest decision ids (pantry.keys.decisions_of: LPUSH, LTRIM to
DECISIONS_PER_CUSTOMER, PEXPIRE to the retention), the console's way to a customer's decisions.

Requests only enqueue (no await on Redis); a background task flushes the queue in pipelined batches. A failed write
is counted and dropped — it never fails or slows the request that made the decision.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from pantry.featurestore.roundtrip import RoundTrip
from pantry.keys import DECISIONS_PER_CUSTOMER, DECISIONS_STREAM, decisions_of

log = logging.getLogger("pantry.serving.decisions")
_encoder = msgspec.json.Encoder()


def new_decision_id() -> str:
    # time-ordered prefix (ms) so ids sort like the stream; random tail for uniqueness across workers
    return f"{int(time.time() * 1000):x}-{uuid.UUID(bytes=os.urandom(16)).hex[:16]}"


def capped(value: bytes, max_bytes: int) -> bytes:
    """`value` (JSON) if it fits in `max_bytes`, else a JSON marker saying how long it was."""
    return value if len(value) <= max_bytes else b'{"truncated_bytes":%d}' % len(value)


class DecisionLog:
    def __init__(self, pipeline: RoundTrip, maxlen: int, queue_max: int = 10_000, on_drop=None, *,
                 retention_s: float = 30 * 86400.0, max_field_bytes: int = 8192, trim_every_s: float = 60.0):
        self.pipeline = pipeline
        self.maxlen = maxlen
        self.retention_s, self.max_field_bytes, self.trim_every_s = retention_s, max_field_bytes, trim_every_s
        self.last_trim = 0.0  # the first flush also trims by age
        self._xadd = (b"XADD", DECISIONS_STREAM.encode(), b"MAXLEN", b"~", str(maxlen).encode(), b"*")
        self._keep = (b"0", str(DECISIONS_PER_CUSTOMER - 1).encode())
        self._ttl_ms = str(int(retention_s * 1000)).encode()
        # per decision, its commands: the XADD and the customer index's LPUSH, LTRIM, PEXPIRE
        self.queue: asyncio.Queue[tuple[tuple[bytes, ...], ...]] = asyncio.Queue(maxsize=queue_max)
        self.on_drop = on_drop or (lambda n, reason: None)

    def record(
        self,
        *,
        decision_id: str,
        endpoint: str,
        request: Any,
        model: str,
        model_version: str,
        customer_id: int,
        surface: str,
        experiment_id: str,
        arm: str,
        elapsed_ms: float,
        feature_ages: dict[str, float | None],
        fallback: str | None,
        items: Any,
        now: Any,
        stream_lag_s: float | None = None,
    ) -> None:
        cap = self.max_field_bytes
        entry = (
            *self._xadd,
            b"decision_id", decision_id.encode(),
            b"endpoint", endpoint.encode(),
            b"ts", f"{time.time():.6f}".encode(),
            b"now", _encoder.encode(now),
            b"request", capped(_encoder.encode(request), cap),
            b"model", model.encode(),
            b"model_version", model_version.encode(),
            b"customer_id", b"%d" % customer_id,
            b"surface", surface.encode(),
            b"experiment_id", experiment_id.encode(),
            b"arm", arm.encode(),
            b"elapsed_ms", b"%.3f" % elapsed_ms,
            b"feature_ages", capped(_encoder.encode(feature_ages), cap),
            b"fallback", (fallback or "").encode(),
            b"items", capped(_encoder.encode(items), cap),
            # the live flow's lag when the features were read: rows may miss events this much older (empty: unknown)
            b"stream_lag_s", b"" if stream_lag_s is None else b"%.3f" % stream_lag_s,
        )
        index = decisions_of(customer_id).encode()
        commands = (entry, (b"LPUSH", index, decision_id.encode()), (b"LTRIM", index, *self._keep),
                    (b"PEXPIRE", index, self._ttl_ms))
        try:
            self.queue.put_nowait(commands)
        except asyncio.QueueFull:
            self.on_drop(1, "queue_full")

    def trim_command(self, now_s: float) -> tuple[bytes, ...]:
        minid = max(0, int((now_s - self.retention_s) * 1000))
        return (b"XTRIM", DECISIONS_STREAM.encode(), b"MINID", b"~", f"{minid}-0".encode())

    async def flush_once(self, max_batch: int = 500) -> int:
        decisions = [await self.queue.get()]
        while len(decisions) < max_batch and not self.queue.empty():
            decisions.append(self.queue.get_nowait())
        n = len(decisions)
        batch = [command for commands in decisions for command in commands]
        now = time.time()
        if now - self.last_trim >= self.trim_every_s:  # age bound, with the writes (ids are ms of wall time)
            self.last_trim = now
            batch.append(self.trim_command(now))
        try:
            await self.pipeline.run(batch, timeout_s=1.0)
        except Exception as exc:  # Redis down: drop this batch, keep serving
            self.on_drop(n, "store_unavailable")
            log.debug("decision log write failed: %s", exc)
            await asyncio.sleep(0.2)
        return n

    async def run(self) -> None:
        while True:
            try:
                await self.flush_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("decision log flusher")
                await asyncio.sleep(1.0)  # a bug here must not spin the loop

    async def drain(self, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.queue.empty() and time.monotonic() < deadline:
            await self.flush_once()


class DecisionRow(msgspec.Struct):
    stream_id: str
    decision_id: str
    endpoint: str
    ts: float
    now: str
    request: str
    model: str
    model_version: str
    customer_id: int
    surface: str
    experiment_id: str
    arm: str
    elapsed_ms: float
    feature_ages: str
    fallback: str | None
    items: str
    stream_lag_s: float | None = None  # the live flow's lag at the read (serving/stream_lag.py); None: unknown


def decode_entry(stream_id: bytes, fields: Mapping[bytes, bytes]) -> DecisionRow:
    """One entry of the decision log as written by `DecisionLog.record` (JSON fields kept as JSON text; a missing
    field as empty). `export` and the console's decision lookup (serving/console/decision_lookup.py) both read
    entries with it."""
    f = {k.decode(): v.decode() for k, v in fields.items()}
    return DecisionRow(
        stream_id=stream_id.decode(),
        decision_id=f.get("decision_id", ""),
        endpoint=f.get("endpoint", ""),
        ts=float(f.get("ts", 0) or 0),
        now=f.get("now", ""),
        request=f.get("request", ""),
        model=f.get("model", ""),
        model_version=f.get("model_version", ""),
        customer_id=int(f.get("customer_id", -1) or -1),
        surface=f.get("surface", ""),
        experiment_id=f.get("experiment_id", ""),
        arm=f.get("arm", ""),
        elapsed_ms=float(f.get("elapsed_ms", 0) or 0),
        feature_ages=f.get("feature_ages", ""),
        fallback=f.get("fallback") or None,
        items=f.get("items", ""),
        stream_lag_s=float(f["stream_lag_s"]) if f.get("stream_lag_s") else None,
    )


def export(client, out_path, batch: int = 5000, progress: bool = True) -> int:
    """Every decision in the stream to a parquet file (JSON columns kept as JSON text). Returns the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    total = client.xlen(DECISIONS_STREAM)
    rows: list[dict] = []
    start = "-"
    with tqdm(total=total, desc="decisions", unit="row", disable=not progress) as bar:
        while True:
            chunk = client.xrange(DECISIONS_STREAM, min=start, max="+", count=batch)
            if start != "-" and chunk:
                chunk = chunk[1:] if chunk[0][0] == start else chunk
            if not chunk:
                break
            rows.extend(msgspec.structs.asdict(decode_entry(stream_id, fields)) for stream_id, fields in chunk)
            bar.update(len(chunk))
            start = chunk[-1][0]
    kinds = {"ts": pa.float64(), "elapsed_ms": pa.float64(), "customer_id": pa.int64(), "stream_lag_s": pa.float64()}
    schema = pa.schema([(f, kinds.get(f, pa.string())) for f in DecisionRow.__struct_fields__])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out_path)
    return len(rows)
