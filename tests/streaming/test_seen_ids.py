"""The gate's duplicate check (streaming/seen_ids.py) against a dict of every id it accepted: random ids with
repeats, out-of-order and late times, batches of any size, merges of waiting hashes mid-stream, snapshots and resumes
(also from an older snapshot's dict of ids); and the memory it holds."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming import gate as G
from streaming import seen_ids
from streaming.features.event import LATENESS_S, MINUTE, Ev
from streaming.seen_ids import MINUTE_S, SeenIds

T0 = 1_500_000_000.0


def buy(eid: str, t: float) -> Ev:
    return Ev(eid, "purchase", t, 1, 10, 100, 1, 1, 1.0)


class Reference:
    """The rule, by scan: an id accepted before is a duplicate while its minute is not wholly past the lateness bound
    (as of the end of the batch that moved the bound); then late and out-of-range rules as the gate's."""

    def __init__(self):
        self.seen: dict[str, float] = {}
        self.max_t = -1e300
        self.duplicates = 0

    def apply(self, batch: list[Ev]) -> list[str]:
        accepted = []
        for e in batch:
            if e.event_id in self.seen:
                self.duplicates += 1
            elif e.t >= self.max_t - LATENESS_S:
                self.max_t = max(self.max_t, e.t)
                self.seen[e.event_id] = e.t
                accepted.append(e.event_id)
        bound = self.max_t - LATENESS_S
        self.seen = {i: t for i, t in self.seen.items() if t // MINUTE_S * MINUTE_S + MINUTE_S > bound}
        return accepted


# a stream: (id among a few, so repeats are common; time step, back steps within and past the lateness bound)
STEP = st.sampled_from([0.0, 1.0, 59.0, 60.0, 3 * MINUTE, -5 * MINUTE, -11 * MINUTE, LATENESS_S, 2 * LATENESS_S])
EVENTS = st.lists(st.tuples(st.integers(0, 40), STEP), min_size=1, max_size=300)


@settings(max_examples=300, deadline=None)
@given(EVENTS, st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(1, 5), st.sampled_from([0, 3, 7]))
def test_the_gate_drops_exactly_the_duplicates_a_dict_of_ids_would(events, sizes, seal_at, resume_every):
    seen_ids_seal = seen_ids.SEAL_AT
    seen_ids.SEAL_AT = seal_at  # merges happen mid-stream
    try:
        gate, ref = G.GateState(), Reference()
        t, batch_no, i = T0, 0, 0
        stream = []
        for eid, step in events:
            if step >= 0:
                t += step
            stream.append(buy(f"id-{eid}", t + min(step, 0.0)))  # a back step: this one event, out of order
        while i < len(stream):
            batch = stream[i:i + sizes[batch_no % len(sizes)]]
            i += len(batch)
            batch_no += 1
            accepted, _ = G.gate_apply(gate, batch)
            assert [e.event_id for e in accepted] == ref.apply(batch)
            assert gate.counters["duplicate"] == ref.duplicates
            if resume_every and batch_no % resume_every == 0:  # a snapshot and a resume between batches
                gate = msgspec.msgpack.decode(gate.encode(), type=G.GateState)
    finally:
        seen_ids.SEAL_AT = seen_ids_seal


def test_an_older_snapshots_ids_are_still_duplicates_after_its_resume():
    class OldGateState(msgspec.Struct, array_like=True):  # the layout before streaming/seen_ids.py
        max_t: float
        seen: dict[str, float]
        counters: dict[str, int]
        prune_at: int
        held_events: list[Ev]
        held_decisions: list

    old = OldGateState(T0, {"a": T0, "b": T0 + 1}, {"processed": 2, "duplicate": 0, "late": 0, "invalid": 0},
                       50_000, [], [])
    logic = G.GateLogic(msgspec.msgpack.encode(old))
    accepted, _ = G.gate_apply(logic.st, [buy("a", T0 + 2), buy("c", T0 + 2), buy("b", T0 + 3)])
    assert [e.event_id for e in accepted] == ["c"] and logic.st.counters["duplicate"] == 2
    again = msgspec.msgpack.decode(logic.snapshot(), type=G.GateState)
    assert not again.seen and len(again.ids) == 3
    G.gate_apply(again, [buy("a", T0 + 4)])
    assert again.counters["duplicate"] == 3


def test_eleven_minutes_of_ids_hold_8_bytes_an_id_and_forget_the_minutes_past_lateness():
    gate = G.GateState()
    rate, batch = 1_000, 500
    for k in range(0, 690 * rate, batch):  # eleven and a half minutes
        G.gate_apply(gate, [buy(f"s-{j}", T0 + j / rate) for j in range(k, k + batch)])
    ids = gate.ids
    held = len(ids)
    # the ids of the last lateness bound, and at most the minute the bound is in
    assert LATENESS_S * rate <= held <= (LATENESS_S + MINUTE) * rate
    nbytes = sum(a.nbytes for a in ids.by_minute.values())
    assert nbytes == 8 * (held - len(ids.pending)) and len(ids.pending) < seen_ids.SEAL_AT  # the rest wait in a set
    snapshot = gate.encode()
    assert len(snapshot) <= 8.5 * held  # the snapshot as compact (a dict of the ids encoded to ~20 bytes each)
    # the oldest minute held is the one the bound is in (the second): an id of the first is late now, not a duplicate
    _, late = G.gate_apply(gate, [buy("s-0", T0)])
    assert late and late[0][0].startswith("late") and gate.counters["duplicate"] == 0


def test_a_batch_sees_its_own_duplicates_and_keys_differ_per_gate():
    gate = G.GateState()
    accepted, _ = G.gate_apply(gate, [buy("x", T0), buy("x", T0 + 1), buy("y", T0), buy("x", T0 - 1)])
    assert [e.event_id for e in accepted] == ["x", "y"] and gate.counters["duplicate"] == 2
    assert SeenIds().hashes(["x"]) != SeenIds().hashes(["x"])  # a random key each
    same = SeenIds(b"k" * 16)
    assert same.hashes(["x", "\ud800"]) == SeenIds(b"k" * 16).hashes(["x", "\ud800"])
