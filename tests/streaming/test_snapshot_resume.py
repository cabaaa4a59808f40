"""A shard resumed from its snapshot (which leaves out the indexes a state rebuilds, and holds pairs that sold once
as Singles) gives the rows of the shard that never stopped: random purchases, baskets of several lines, lines out of
order within the lateness bound, inventory counts, snapshots taken between any two batches; and the same from the
live flow's snapshots written by a forked child (streaming/forked_snapshots.py)."""

from __future__ import annotations

import os
import random
import time

import pytest

from streaming import forked_snapshots
from streaming.customer_shard import CustomerShardLogic
from streaming.epoch_clock import CLOCK, EpochClock
from streaming.features.event import DAY, LATENESS_S, Ev
from streaming.forked_snapshots import MAGIC, Forks, path_of
from streaming.gate import FORKED_GATE, GateSnapshots, gate_apply, gate_state
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

T0 = 1_500_000_000.0


def _events(seed: int, n: int = 3000) -> list[Ev]:
    rng = random.Random(seed)
    out, t = [], T0
    for i in range(n):
        t += rng.choice([0.0, 1.0, 30.0, 400.0, 3 * 3600.0])
        when = t - rng.uniform(0, LATENESS_S - 1) if rng.random() < 0.2 else t  # out of order, within lateness
        cid, sid = rng.randrange(1, 20), rng.randrange(1, 6)
        pid = rng.choice([rng.randrange(1, 8), 100 + i])  # 100 + i: a pair that sells once
        if rng.random() < 0.1:
            out.append(Ev(f"i{i}", "inventory", when, None, sid, pid, None, 0, 0.0, rng.randrange(0, 9)))
        elif rng.random() < 0.1:
            out.append(Ev(f"v{i}", "product_view", when, cid, None, pid))
        else:
            basket = rng.choice([i, i - 1, i - 2])  # baskets of several lines
            out.append(Ev(f"p{i}", "purchase", when, cid, sid, pid, basket, rng.randrange(1, 4),
                          round(rng.uniform(0.5, 20), 2)))
    return out


def _rows(logic, as_of: float) -> dict:
    out, _ = logic.on_batch([Work([], True, as_of, True)])
    return {(view, join): (values, t) for view, join, values, t in out[0].online}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shard_resumed_from_its_snapshot_gives_the_rows_of_one_that_never_stopped(seed: int):
    rng = random.Random(seed)
    for make, key in ((lambda resume: CustomerShardLogic(resume, flush_s=0.0), "customer_id"),
                      (lambda resume: StoreShardLogic(resume, flush_s=0.0), "store_id")):
        events = [e for e in _events(seed) if getattr(e, key) is not None]  # as the gate routes them
        whole, resumed = make(None), make(None)
        for i in range(0, len(events), 100):
            batch = events[i:i + 100]
            whole.on_batch([Work(batch, False, None, False)])
            resumed.on_batch([Work(batch, False, None, False)])
            if rng.random() < 0.3:
                resumed = make(resumed.snapshot())
        if isinstance(whole, StoreShardLogic):
            assert len(whole.shard.small) and whole.shard.pairs  # both ways of holding a pair were resumed
        end = max(e.t for e in events)
        assert _rows(resumed, end) == _rows(whole, end)
        assert _rows(resumed, end + 8 * DAY) == _rows(whole, end + 8 * DAY)  # windows rolled after the resume


@pytest.fixture(autouse=True)
def _no_logics_of_other_tests():
    forked_snapshots._THREADS.clear()  # a fork writes every logic its thread registered


def _close_due() -> None:
    CLOCK.last_close = time.monotonic() - CLOCK.interval_s  # the next batch of a live shard forks


@pytest.mark.parametrize("seed", [1, 2])
def test_a_shard_resumed_from_a_forked_snapshot_gives_the_rows_of_one_that_never_stopped(seed: int, tmp_path):
    """The snapshot is a forked child's file of the state plus the events applied after the fork."""
    rng = random.Random(seed)
    forks = Forks(tmp_path, lead_s=1.0)
    CLOCK.start(3600.0)
    for make, key in ((lambda resume, f=None: CustomerShardLogic(resume, flush_s=0.0, forks=f), "customer_id"),
                      (lambda resume, f=None: StoreShardLogic(resume, flush_s=0.0, forks=f), "store_id")):
        events = [e for e in _events(seed) if getattr(e, key) is not None]
        whole, resumed = make(None), make(None, forks)
        forked = 0
        for i in range(0, len(events), 100):
            if rng.random() < 0.3:
                _close_due()
            batch = events[i:i + 100]
            whole.on_batch([Work(batch, False, None, False)])
            resumed.on_batch([Work(batch, False, None, False)])
            if rng.random() < 0.3:
                snap = resumed.snapshot()
                forked += snap.startswith(MAGIC)
                resumed = make(snap, forks)
        assert forked >= 3
        end = max(e.t for e in events)
        assert _rows(resumed, end) == _rows(whole, end)
        assert _rows(resumed, end + 8 * DAY) == _rows(whole, end + 8 * DAY)


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 65_535, 65_536, 70_000])
def test_the_events_since_a_fork_encoded_batch_by_batch_join_to_their_encoding_as_one_list(n: int):
    """A forked snapshot's events are encoded as each batch is applied and joined at the close: the bytes are those
    of the whole list (msgpack's three array headers), so a resume decodes them as one."""
    events = [Ev(event_id=f"e{i}", kind="purchase", t=float(i), customer_id=i % 7) for i in range(n)]
    cuts = sorted(random.Random(n).sample(range(n + 1), min(6, n + 1)))
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True) if b > a]
    joined = forked_snapshots._array_header(n) + b"".join(
        forked_snapshots._array_items(forked_snapshots._encode_events(b)) for b in batches)
    assert joined == forked_snapshots._encode_events(events)
    assert forked_snapshots._decode_events(joined) == events


def test_forked_snapshots_keep_the_files_of_the_last_two_and_fall_back_to_the_state(tmp_path, monkeypatch):
    events = [e for e in _events(4, 600) if e.customer_id is not None]
    CLOCK.start(3600.0)
    logic = CustomerShardLogic(None, flush_s=0.0, forks=Forks(tmp_path, lead_s=1.0))
    snaps = []
    for i in range(0, 400, 100):
        logic.on_batch([Work(events[i:i + 100], False, None, False)])
        _close_due()
        logic.on_batch([Work(events[i + 100:i + 120], False, None, False)])  # after the fork: in the snapshot
        snaps.append(logic.snapshot())
    paths = [path_of(s) for s in snaps]
    assert all(paths) and len(set(paths)) == 4
    forked_snapshots.deleted()  # superseded files go in a thread of their own
    assert [os.path.exists(p) for p in paths] == [False, False, True, True]  # the committed one and the newest
    assert len(_decode(snaps[-1])) == 20

    logic.on_batch([Work(events[400:420], False, None, False)])  # no fork in this epoch: the state at the close
    assert not logic.snapshot().startswith(MAGIC)

    monkeypatch.setattr(forked_snapshots, "FORK_MAX_EVENTS", 10)  # the close came too late: the fork is given up
    _close_due()
    logic.on_batch([Work(events[420:440], False, None, False)])
    logic.on_batch([Work(events[440:460], False, None, False)])
    assert not logic.snapshot().startswith(MAGIC)

    parent = os.getpid()
    state = logic.encode_state

    def fails_in_the_child() -> bytes:
        if os.getpid() != parent:
            raise OSError("disk full")
        return state()

    logic.snapshots.encode_state = fails_in_the_child  # a child that fails: the state at the close
    _close_due()
    logic.on_batch([Work(events[460:470], False, None, False)])
    snap = logic.snapshot()
    assert not snap.startswith(MAGIC)
    assert CustomerShardLogic(snap, flush_s=0.0).encode_state() == state()


def _decode(snap: bytes) -> list[Ev]:
    return forked_snapshots.read(snap)[1]


def test_a_gate_resumed_from_a_forked_snapshot_knows_every_id_it_accepted(tmp_path):
    """The child writes the gate's seen ids; the ids added after the fork and the rest of its state come with the
    snapshot at the close."""
    CLOCK.start(3600.0)
    st, _ = gate_state(None)
    snapshots = GateSnapshots(Forks(tmp_path, lead_s=1.0), st, None)
    events = [Ev(f"g{i}", "purchase", T0 + i * 0.1, i % 50, i % 7, i % 300, i // 3, 1, 1.0) for i in range(3000)]
    gate_apply(st, events[:2000])
    _close_due()
    snapshots.before_batch()  # the fork
    gate_apply(st, events[2000:2600])
    snap = snapshots.snapshot()
    assert snap.startswith(FORKED_GATE) and len(snap) < len(st.encode()) / 2
    resumed, path = gate_state(snap)
    assert path in forked_snapshots.referenced_in([snap])
    assert resumed.encode() == st.encode()  # the same ids (sealed, sorted), key, counters and time
    assert gate_apply(resumed, events[1500:2600])[0] == []  # ids from before and after the fork: duplicates
    assert gate_apply(resumed, events[2600:])[0] == gate_apply(st, events[2600:])[0]


def test_the_epoch_clock_expects_a_close_an_interval_after_the_last():
    clock = EpochClock()
    assert not clock.due(5.0)  # no flow started
    clock.start(100.0)
    assert not clock.due(5.0)
    clock.last_close -= 96.0
    assert clock.due(5.0)
    clock.closed()
    clock.closed()  # another step's snapshot of the same close
    assert clock.closes == 1 and not clock.due(5.0)
    clock.start(2.0)
    clock.last_close -= 1.4
    assert not clock.due(5.0)  # the lead is at most a quarter of the interval
    clock.last_close -= 0.2
    assert clock.due(5.0)
