"""The shards' flushes: what goes to the feature log and what to the online store, with and without deferral
(an unpaced replay writes the online store once per entity, at its end), across a snapshot and resume."""

from __future__ import annotations

from streaming.customer_shard import CustomerShardLogic
from streaming.features.event import DAY, Ev
from streaming.features.store_product import pair_key
from streaming.shards import Work
from streaming.store_shard import StoreShardLogic

T0 = 1_500_000_000.0


def buy(eid: str, t: float, cid: int, sid: int, pid: int) -> Ev:
    return Ev(eid, "purchase", t, cid, sid, pid, int(t), 1, 2.0)


def keys(rows) -> set[tuple[str, tuple[int, ...]]]:
    return {(view, join) for view, join, _, _ in rows}


def flush_of(logic, events: list[Ev], final: bool = False, as_of: float | None = None):
    out, _ = logic.on_batch([Work(events, refresh=final, as_of=as_of, final=final)])
    assert len(out) == 1  # flush_s=0: every batch flushes
    return out[0]


def test_deferred_store_flushes_log_only_and_the_end_writes_every_entity_online():
    logic = StoreShardLogic(None, flush_s=0.0, defer_online=True)
    first = flush_of(logic, [buy("a", T0, 1, 16, 100), buy("b", T0 + 1, 1, 16, 101)])
    assert keys(first.log) == {("store_traffic", (16,)), ("store_product", (16, 100)), ("store_product", (16, 101))}
    assert first.online == []
    second = flush_of(logic, [buy("c", T0 + 2, 2, 16, 100)])
    assert keys(second.log) == {("store_traffic", (16,)), ("store_product", (16, 100))}
    assert second.online == []
    # the end of the replay: a row of every entity, the changed ones (rolled forward) logged as well
    end = T0 + 40 * DAY
    last = flush_of(logic, [], final=True, as_of=end)
    assert keys(last.online) == keys(first.log)
    assert keys(last.log) <= keys(last.online)
    online = {(view, join): values for view, join, values, _ in last.online}
    units_7d, units_28d, last_sold_at = online[("store_product", (16, 100))][:3]
    assert (units_7d, units_28d, last_sold_at) == (0, 0, T0 + 2)  # both sales left the windows 40 days later
    assert all(t == end for _, _, _, t in last.online)  # every pair and the store were due: rolled to the end
    assert logic.shard.pair(pair_key(16, 100)).as_of == end
    assert logic.shard.online_behind is False


def test_online_catch_up_survives_a_snapshot_and_a_non_deferred_resume():
    """An unpaced replay killed mid-way, then a live run from its snapshot: the live run's first flush sends the
    changed entity and every other one to the online store, the log gets only the changed one."""
    deferred = CustomerShardLogic(None, flush_s=0.0, defer_online=True)
    flush_of(deferred, [buy("a", T0, 7, 1, 100), buy("b", T0 + 5, 23, 1, 200)])
    assert deferred.shard.online_behind is True
    resumed = CustomerShardLogic(deferred.snapshot(), flush_s=0.0, defer_online=False)
    flush = flush_of(resumed, [buy("c", T0 + 9, 7, 1, 101)])
    assert keys(flush.log) == {("customer_activity", (7,)), ("customer_repertoire", (7,)),
                               ("customer_session", (7,))}
    assert keys(flush.online) == keys(flush.log) | {("customer_activity", (23,)), ("customer_repertoire", (23,)),
                                                    ("customer_session", (23,))}
    # caught up: the next flush writes what changed, to both
    again = flush_of(resumed, [buy("d", T0 + 12, 23, 1, 200)])
    assert again.online is again.log and keys(again.log) == {("customer_activity", (23,)),
                                                              ("customer_repertoire", (23,)),
                                                              ("customer_session", (23,))}
    assert resumed.snapshot() != deferred.snapshot()


def test_rows_of_unchanged_entities_equal_their_last_logged_rows():
    logic = StoreShardLogic(None, flush_s=0.0, defer_online=True)
    first = flush_of(logic, [buy("a", T0, 1, 16, 100), buy("b", T0 + 1, 1, 16, 101)])
    flush_of(logic, [buy("c", T0 + 2, 2, 16, 100)])
    logic.defer_online = False  # the next flush catches up
    catch_up = flush_of(logic, [])
    logged = {(view, join): (values, t) for view, join, values, t in first.log}
    online = {(view, join): (values, t) for view, join, values, t in catch_up.online}
    assert catch_up.log == []
    assert online[("store_product", (16, 101))] == logged[("store_product", (16, 101))]
    assert online[("store_product", (16, 100))] != logged[("store_product", (16, 100))]  # sold again since


def test_the_catch_up_writes_every_view_of_an_entity_that_changed_in_its_last_flush_window():
    """A customer whose last change before the end touched only activity and repertoire (the final refresh rolling
    its windows) still gets its session row online: which views were dirty at the end depends on when the wall-clock
    flushes fell, and the online store must not."""
    logic = CustomerShardLogic(None, flush_s=0.0, defer_online=True)
    flush_of(logic, [buy("a", T0, 7, 1, 100)])  # logged only: session, activity, repertoire
    last = flush_of(logic, [], final=True, as_of=T0 + 40 * DAY)  # rolls activity and repertoire only
    assert ("customer_session", (7,)) not in keys(last.log)
    assert keys(last.online) == {("customer_session", (7,)), ("customer_activity", (7,)),
                                 ("customer_repertoire", (7,))}
