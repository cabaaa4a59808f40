"""The Bytewax dataflow: events -> gate (duplicates, lateness) -> keyed feature state -> online store + log.

Items are batches (a few thousand events), not single events: the engine's per-item cost then vanishes and the
per-event work is plain Python in streaming.features. State is sharded by entity id (streaming.shards), so `-w N`
spreads the shards over workers; a gate is one key per stream partition (one for a replay), so a partition's event
order is the same for any worker count, and the features are functions of the events, not of their interleaving
across partitions (tests/streaming: live over partitions equals the replay). Step ids never change (they name
recovery state). Run it with `pantry stream replay|live` (streaming.runner: recovery store, GC settings, several
processes).
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow

from pantry.events import InvalidEvent, decode_msgpack
from pantry.featurestore.layout import OnlineLayout
from pantry.partitions import gate_key
from pantry.settings import Settings
from streaming.customer_shard import CustomerShardLogic
from streaming.event_archive import ArchiveSink
from streaming.feature_log import LIVE_LOG_HANDOFF_S, LOG_EVERY_S
from streaming.features.event import FORGET, NO_TIME, Ev, from_event
from streaming.forked_snapshots import forks_of
from streaming.gate import Gated, GateLogic, Parsed, Skew, route
from streaming.outcomes import Dec, OutcomeShardLogic, parse_decision
from streaming.shards import is_customer_shard
from streaming.sinks import REASON_MAX, Control, ControlSink, KpiSink, OnlineSink, failure
from streaming.sources import FORGET_PREFIX, Batch, LiveSource, ReplaySource
from streaming.store_shard import StoreShardLogic


class StreamConfig(msgspec.Struct, frozen=True):
    mode: str = "replay"  # replay | live
    until: datetime | None = None
    speed: float | None = None
    flush_s: float = 0.1
    write_log: bool = True
    refresh_slice: int = 16  # per shard, rolled forward every ROLL_EVERY_S after a live refresh (0: all at once)
    # An unpaced replay (a backfill) sends its flushes' rows to the feature log only, and the online store gets one
    # row per entity at the end: its intermediate values would be overwritten within seconds, never read, and
    # writing them took more than a third of the replay's time (Redis shares the flow's cores).
    defer_online: bool = False


# ---- small pure functions: the steps -----------------------------------------------------------------------------


def parse_decisions(entries: list[dict[bytes, bytes]]) -> tuple[list[Dec], list[tuple[str, bytes]]]:
    """Decision-log entries as the outcome join's Decs; an unreadable one becomes a dead letter (its decision_id)."""
    decisions: list[Dec] = []
    dead: list[tuple[str, bytes]] = []
    for fields in entries:
        try:
            decisions.append(parse_decision(fields))
        except Exception as exc:  # one bad entry must not stop the others
            dead.append((f"invalid decision: {type(exc).__name__}: {exc}"[:REASON_MAX],
                         fields.get(b"decision_id", b"")[:128]))
    return decisions, dead


def parse_batch(batch: Batch) -> Parsed:
    """Decode stream entries; schema failures and unknown types become (reason, payload) dead letters."""
    decisions, dead_decisions = parse_decisions(batch.decisions) if batch.decisions else ([], [])
    if not batch.raws:
        return Parsed(batch.events, [], batch.refresh, batch.as_of, batch.final, batch.position, decisions,
                      dead_decisions, batch.partition)
    events = list(batch.events)
    dead: list[tuple[str, bytes]] = []
    for _entry_id, payload in batch.raws:
        if payload is None:
            dead.append(("missing field 'e'", b""))
            continue
        try:
            if payload.startswith(FORGET_PREFIX):  # an erasure: the customer's shard drops its state here
                events.append(Ev(f"forget:{_entry_id.decode()}", FORGET, NO_TIME, int(payload[len(FORGET_PREFIX):])))
                continue
            events.append(from_event(decode_msgpack(payload)))
        except InvalidEvent as exc:
            dead.append((f"invalid: {exc}"[:REASON_MAX], payload))
        except Exception as exc:  # whatever else one entry raises, the others go on
            dead.append((failure(exc, None, "parse")[0], payload))
    return Parsed(events, dead, batch.refresh, batch.as_of, batch.final, batch.position, decisions, dead_decisions,
                  batch.partition)


def control_of(item: tuple[str, Gated]) -> Control:
    return item[1].control


def archived_of(item: tuple[str, Gated]) -> tuple[str, tuple[float, list[Ev]]] | None:
    gated = item[1]
    return ("archive", (gated.accepted_at, gated.archived)) if gated.archived else None


# ---- the flow ------------------------------------------------------------------------------------------------


def build_flow(settings: Settings, config: StreamConfig, stop_flag=None,
               layout: OnlineLayout | None = None, workers: int = 1) -> Dataflow:
    """`workers`: in the whole flow (threads x processes)."""
    flow = Dataflow("pantry_stream")
    if config.mode == "live":
        source = LiveSource(settings, stop_flag, workers)
    else:
        source = ReplaySource(settings, config.until, config.speed)
    batches = op.input("events", flow, source)
    # Batch(events | raw stream entries, refresh?)
    parsed = op.map("parse", batches, parse_batch)
    # Parsed(events: [Ev], dead: [(reason, payload)], refresh, as_of)
    keyed = op.key_on("gate_key", parsed, lambda p: gate_key(p.partition))
    # ("gate" | "gate-1" ..., Parsed): one gate per stream partition (a replay: "gate")
    # live: events too far ahead of the service clock are rejected (pantry.clock.max_accepted_ts); a replay's data
    # set is in event-time order with gaps of any length, and bounded by the schema
    skew = Skew(settings.clock, settings.event_skew_wall_s, settings.event_skew_event_s) if config.mode == "live" \
        else None
    live = config.mode == "live"
    forks = forks_of(settings) if live else None  # live: snapshots by forked children (streaming/forked_snapshots.py)
    gated = op.stateful_batch("gate", keyed, partial(GateLogic, skew=skew,
                                                      outcome_tick_s=settings.kpi_flush_s if live else None,
                                                      archive=live, forks=forks))
    # (gate key, Gated(routes {shard: [Ev]}, refresh, as_of, control, outcomes {shard: OutWork}, archived [Ev]))
    if live:  # the event archive (streaming/event_archive.py); a replay's events are the data set already
        accepted = op.filter_map("archive_events", gated, archived_of)
        # ("archive", (accepted_at, [Ev])) for each gate batch that accepted something
        op.output("archive", accepted, ArchiveSink(settings))
        # -> parquet files by event day under <data_dir>/event_archive/
    work = op.flat_map("route", gated, lambda kv: route(kv[1]))
    # (shard key "c03" | "s11", Work(events, refresh, as_of)); live also ("o07", OutWork(events, decisions, as_of))
    if live:  # the outcome join (streaming/outcomes.py): a replay has no decisions, and keeps its speed
        parts = op.branch("outcome_split", work, lambda kv: kv[0][0] == "o")
        work = parts.falses
        kpis = op.stateful_batch("outcomes", parts.trues, partial(
            OutcomeShardLogic, flush_s=settings.kpi_flush_s, window_s=settings.kpi_attribution_window_s,
            per_customer=settings.kpi_decisions_per_customer, pending_s=settings.kpi_pending_s,
            retention_days=settings.kpi_retention_days))
        # (shard "o07", KpiFlush(totals {key field: Counts}, deleted keys, counters))
        op.output("kpis", kpis, KpiSink(settings))
        # -> HSET pantry:kpis:<shard> (absolute totals), HDEL (retention), HSET pantry:kpis:counters
    split = op.branch("split", work, is_customer_shard)
    # trues: customer shards, falses: store shards
    shard_args = {"flush_s": config.flush_s, "refresh_slice": config.refresh_slice,
                  "defer_online": config.defer_online, "forks": forks}
    customer_rows = op.stateful_batch("customers", split.trues, partial(CustomerShardLogic, **shard_args))
    # (shard, Flush(log: [Row], online: [Row])) rows of customer_session / customer_activity / customer_repertoire
    store_rows = op.stateful_batch("stores", split.falses, partial(StoreShardLogic, **shard_args))
    # (shard, Flush) rows of store_traffic / store_product
    rows = op.map("rows", op.merge("merge", customer_rows, store_rows), lambda kv: kv[1])
    # Flush; a Row is (view, join values, features, event time)
    log_handoff_s = LIVE_LOG_HANDOFF_S if config.mode == "live" else LOG_EVERY_S
    op.output("online", rows, OnlineSink(settings, config.write_log, layout, log_handoff_s, freeze_gc=live))
    # -> HSET in Feast's layout + parquet feature log
    controls = op.map("control", gated, control_of)
    # Control(counters, max event time, dead letters)
    op.output("control_out", controls, ControlSink(settings, heartbeat=config.mode == "live"))
    # -> watermark, counters, dead-letter stream; live: the heartbeat (pantry:stream:live, about once a second)
    return flow
