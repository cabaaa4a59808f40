"""The store x product pairs that hold a few sales and no inventory count, in columns: most of a store shard's pairs.

A pair without running sums (store_product.py: at most PAIR_INDEX_FROM sales, `ix` False) and without an inventory
count is a slot of fixed-width columns here (its key, as_of, last sale, how many sales, and room for PAIR_INDEX_FROM
sale times and units) rather than a StoreProductState: ~236 bytes a pair however many sales it holds (with its
key -> slot entry), where a state with two sales costs ~470, and a recovery snapshot encodes the columns as seven byte
strings rather than several objects a pair (docs/DECISIONS.md "Small pairs in columns").
Its rows and next change are those of the state it stands for (`state`), computed by the same scans. At a sale it
has no room for, or at an inventory count, it leaves the columns as that state (`pop_state`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

import numpy as np

from streaming.features.baskets import Baskets
from streaming.features.event import DAY, LATENESS_S, NO_TIME
from streaming.features.store_product import (
    PAIR_INDEX_FROM,
    Counts,
    StoreProductState,
    Times,
    decode_column,
    encode_column,
    scan_next_change,
    scan_values,
)

K = PAIR_INDEX_FROM  # sales a slot holds
FREE = -1  # the key of a free slot


class SmallPairs:
    """Pair key -> slot, and the columns by slot (`times` and `units`: K per slot, the first `n` in arrival order).
    Snapshots: `columns` / `from_columns` (native byte order: a recovery store resumes on the machine's kind)."""

    __slots__ = ("as_of", "free", "keys", "last", "n", "slots", "times", "units")

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}
        self.keys = array("q")
        self.as_of = array("d")
        self.last = array("d")  # the latest sale's time
        self.n = array("B")
        self.times = array("d")
        self.units = array("i")  # pantry.events.MAX_QUANTITY < 2^31
        self.free = array("q")  # slots given back (pop_state), used again first

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, key: int) -> bool:
        return key in self.slots

    def __iter__(self) -> Iterator[int]:
        return iter(self.slots)

    def __eq__(self, other: object) -> bool:  # the same pairs and sales (slot numbers aside)
        return isinstance(other, SmallPairs) and {k: self.state(k) for k in self} == {k: other.state(k) for k in other}

    def sale(self, key: int, t: float, q: int) -> bool:
        """A sale of pair `key`, which is not a state of the shard's `pairs`: held here (a new pair, or one with
        room) -> True; False if the pair is full (it must become its state first: pop_state)."""
        s = self.slots.get(key)
        if s is None:
            s = self._slot(key)
            try:
                self.units[s * K] = q  # first: the one assignment that can raise (a quantity past int32)
            except BaseException:
                self._give_back(key)
                raise
            self.times[s * K] = t
            self.n[s], self.last[s], self.as_of[s] = 1, t, t if t > 0.0 else 0.0
            return True
        n = self.n[s]
        if n == K:
            return False
        i = s * K + n
        self.units[i] = q
        self.times[i] = t
        self.n[s] = n + 1
        if t > self.last[s]:
            self.last[s] = t
        if t > self.as_of[s]:
            self.as_of[s] = t
        return True

    def _slot(self, key: int) -> int:
        if self.free:
            s = self.free.pop()
            self.keys[s] = key
        else:
            s = len(self.keys)
            self.keys.append(key)
            self.as_of.append(0.0)
            self.last.append(0.0)
            self.n.append(0)
            self.times.extend(_NO_TIMES)
            self.units.extend(_NO_UNITS)
        self.slots[key] = s
        return s

    def as_of_of(self, key: int) -> float:
        return self.as_of[self.slots[key]]

    def roll(self, key: int, as_of: float) -> None:
        self.as_of[self.slots[key]] = as_of

    def row(self, key: int) -> tuple[tuple, float]:
        """(store_product_values(self.state(key), its as_of), its as_of): the pair's row, forgetting the sales that
        state would."""
        s = self.slots[key]
        as_of = self.as_of[s]
        return self._values(s, as_of), as_of

    def values(self, key: int, as_of: float) -> tuple:
        """store_product_values(self.state(key), as_of), forgetting the sales as that state would."""
        return self._values(self.slots[key], as_of)

    def _values(self, s: int, as_of: float) -> tuple:
        lo7, lo28 = as_of - 7 * DAY, as_of - 28 * DAY
        horizon = lo28 - LATENESS_S
        times, units = self.times, self.units
        lo, n = s * K, self.n[s]
        if n and times[lo] <= horizon:  # as the state: its first sale (arrival order) tells
            kept = [(times[i], units[i]) for i in range(lo, lo + n) if times[i] > horizon]
            for i, (t, q) in enumerate(kept):
                times[lo + i], units[lo + i] = t, q
            n = self.n[s] = len(kept)
        return scan_values(times, units, lo, lo + n, NO_TIME, None, self.last[s], as_of, lo7, lo28)

    def next_change(self, key: int) -> float:
        """store_product_next_change(self.state(key))."""
        s = self.slots[key]
        lo = s * K
        return scan_next_change(self.times, lo, lo + self.n[s], self.as_of[s])

    def state(self, key: int) -> StoreProductState:
        """The state this pair stands for."""
        s = self.slots[key]
        lo, hi = s * K, s * K + self.n[s]
        return StoreProductState(as_of=self.as_of[s], last_sold_at=self.last[s], ts=Times(self.times[lo:hi]),
                                 qs=Counts(self.units[lo:hi]))

    def pop_state(self, key: int) -> StoreProductState:
        """The pair leaves the columns, as its state (its slot is given back)."""
        st = self.state(key)
        self._give_back(key)
        return st

    def _give_back(self, key: int) -> None:
        s = self.slots.pop(key)
        self.keys[s], self.n[s] = FREE, 0
        self.free.append(s)

    def put(self, key: int, st: StoreProductState) -> None:
        """A state that a small pair can hold (at most K sales, no running sums, no inventory count) into the columns:
        a pair popped for an event that then failed; a snapshot's pair that sold once, from before the columns."""
        s = self._slot(key)
        for i, (t, q) in enumerate(zip(st.ts, st.qs, strict=True)):
            self.units[s * K + i], self.times[s * K + i] = q, t
        self.n[s], self.as_of[s] = len(st.ts), st.as_of
        self.last[s] = st.last_sold_at

    def columns(self) -> list[bytes]:
        """The columns as bytes, for a recovery snapshot: the sales that slots hold, not their room (most hold one
        or two of K); the key -> slot dict is rebuilt from `keys`."""
        held = _held(self.n)
        times = np.frombuffer(self.times, np.float64).reshape(-1, K)[held]
        units = np.frombuffer(self.units, np.int32).reshape(-1, K)[held]
        return [self.keys.tobytes(), self.as_of.tobytes(), self.last.tobytes(), self.n.tobytes(), times.tobytes(),
                units.tobytes(), self.free.tobytes()]

    @classmethod
    def from_columns(cls, columns: list[bytes]) -> SmallPairs:
        keys, as_of, last, n, times, units, free = columns
        pairs = cls()
        for column, raw in ((pairs.keys, keys), (pairs.as_of, as_of), (pairs.last, last), (pairs.n, n),
                            (pairs.free, free)):
            column.frombytes(raw)
        if not len(pairs.keys) == len(pairs.as_of) == len(pairs.last) == len(pairs.n):
            raise ValueError("small pairs' columns of different lengths")
        held = _held(pairs.n)
        full_times = np.zeros(held.shape, np.float64)
        full_units = np.zeros(held.shape, np.int32)
        full_times[held] = np.frombuffer(times, np.float64)  # raises if the sales' count is not the slots'
        full_units[held] = np.frombuffer(units, np.int32)
        pairs.times.frombytes(full_times.tobytes())
        pairs.units.frombytes(full_units.tobytes())
        pairs.slots = {key: s for s, key in enumerate(pairs.keys) if key != FREE}
        return pairs


def _held(n: array) -> np.ndarray:
    """(slots, K) booleans: which of each slot's K places hold a sale (its first n)."""
    return np.arange(K) < np.frombuffer(n, np.uint8)[:, None]


_NO_TIMES = array("d", [0.0] * K)
_NO_UNITS = array("i", [0] * K)


def encode_hook(obj):
    """msgspec's enc_hook for a store shard's snapshot: SmallPairs and a store's Baskets as their columns, a state's
    column as its bytes."""
    if isinstance(obj, SmallPairs | Baskets):
        return obj.columns()
    return encode_column(obj)


def decode_hook(typ, obj):
    """msgspec's dec_hook for a store shard's snapshot."""
    if typ is SmallPairs:
        return SmallPairs.from_columns(obj)
    if typ is Baskets:
        return Baskets.from_columns(obj)
    return decode_column(typ, obj)
