"""A key's baskets in its windows, in columns: no Python object per basket.

A customer holds the baskets of its last 28 days (customer_activity), a store those of its last 24 hours
(store_traffic), each plus the lateness bound: a basket's identity is needed while its lines may come. As a dict of
tuples with a sorted list of (time, basket) tuples beside it, a basket cost ~250-300 B on each side; at a chain's
pace the sustained bench makes ~1,900 baskets a second, so that was most of what its state grew by. Here a basket is
40 B: the baskets in (time, id) order as three columns (time, id, value) for the windows, and in id order as two
(id, time) for a line's lookup by its basket (docs/DECISIONS.md "Baskets in columns").

`value` is the side's payload: a customer's spend of the basket in micro-units, a store's customer (NO_CUSTOMER for
none). Work per line: O(log n) bisections and, for a basket out of order, a C memmove of the columns (as `insort`
into a list did). A snapshot holds the time-ordered columns as bytes (native byte order); the id order is rebuilt.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

import numpy as np

NO_CUSTOMER = -(2**63)  # a store's basket whose lines named no customer


class Baskets:
    __slots__ = ("by_id", "id_times", "ids", "times", "values")

    def __init__(self) -> None:
        self.times = array("d")  # (time, id) order: a basket's time is its earliest line's
        self.ids = array("q")
        self.values = array("q")
        self.by_id = array("q")  # id order, and each basket's time
        self.id_times = array("d")

    def __len__(self) -> int:
        return len(self.times)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Baskets) and (self.times, self.ids, self.values) == (
            other.times, other.ids, other.values)

    def __repr__(self) -> str:
        return f"Baskets({list(zip(self.times, self.ids, self.values, strict=True))})"

    def time_of(self, basket: int) -> float | None:
        by_id = self.by_id
        if by_id and by_id[-1] == basket:  # the newest basket (a basket's lines come together): no bisection
            return self.id_times[-1]
        i = bisect_left(by_id, basket)
        if i < len(by_id) and by_id[i] == basket:
            return self.id_times[i]
        return None

    def add(self, basket: int, t: float, value: int) -> None:
        """A basket not held yet."""
        by_id = self.by_id
        if not by_id or basket > by_id[-1]:  # ids arrive mostly in order: no bisection
            by_id.append(basket)
            self.id_times.append(t)
        else:
            i = bisect_left(by_id, basket)
            by_id.insert(i, basket)
            self.id_times.insert(i, t)
        self._insert(t, basket, value)

    def value(self, basket: int, t: float) -> int:
        return self.values[self._position(t, basket)]

    def add_value(self, basket: int, t: float, amount: int) -> int:
        """More value on a held basket of time t; returns its value before."""
        i = self._position(t, basket)
        old = self.values[i]
        self.values[i] = old + amount
        return old

    def move(self, basket: int, old: float, t: float) -> None:
        """A held basket's time becomes t (an earlier line came)."""
        i = self._position(old, basket)
        value = self.values[i]
        del self.times[i], self.ids[i], self.values[i]
        self._insert(t, basket, value)
        self.id_times[bisect_left(self.by_id, basket)] = t

    def after(self, t: float) -> int:
        """Index (time order) of the first basket later than t."""
        return bisect_right(self.times, t)

    def count_after(self, t: float) -> int:
        """How many baskets are later than t (all of them, without a bisection, when the first is)."""
        times = self.times
        if not times or times[0] > t:
            return len(times)
        return len(times) - bisect_right(times, t)

    def forget_through(self, horizon: float) -> None:
        """Forget the baskets at or before `horizon` (no window can hold them again)."""
        cut = bisect_right(self.times, horizon)
        if not cut:
            return
        gone = self.ids[:cut]
        del self.times[:cut], self.ids[:cut], self.values[:cut]
        if cut <= 8:
            for basket in gone:
                i = bisect_left(self.by_id, basket)
                del self.by_id[i], self.id_times[i]
        else:
            self._index()

    def columns(self) -> list[bytes]:
        """For a recovery snapshot: the time-ordered columns (the id order is rebuilt from them)."""
        return [self.times.tobytes(), self.ids.tobytes(), self.values.tobytes()]

    @classmethod
    def from_columns(cls, columns: list[bytes]) -> Baskets:
        times, ids, values = columns
        baskets = cls()
        baskets.times.frombytes(times)
        baskets.ids.frombytes(ids)
        baskets.values.frombytes(values)
        if not len(baskets.times) == len(baskets.ids) == len(baskets.values):
            raise ValueError("baskets' columns of different lengths")
        baskets._index()
        return baskets

    def _insert(self, t: float, basket: int, value: int) -> None:
        times, ids = self.times, self.ids
        if not times or t > times[-1] or (t == times[-1] and basket > ids[-1]):  # in time order: appended
            times.append(t)
            ids.append(basket)
            self.values.append(value)
            return
        lo = bisect_left(times, t)
        i = bisect_left(ids, basket, lo, bisect_right(times, t, lo))  # ids ascend within one time
        times.insert(i, t)
        ids.insert(i, basket)
        self.values.insert(i, value)

    def _position(self, t: float, basket: int) -> int:
        times, ids = self.times, self.ids
        if ids and ids[-1] == basket and times[-1] == t:  # the latest basket: no bisection
            return len(ids) - 1
        lo = bisect_left(times, t)
        i = bisect_left(ids, basket, lo, bisect_right(times, t, lo))
        if i >= len(ids) or ids[i] != basket or times[i] != t:
            raise KeyError(f"basket {basket} at {t} is not held")
        return i

    def _index(self) -> None:
        ids = np.frombuffer(self.ids, np.int64)
        order = np.argsort(ids, kind="stable")
        self.by_id = array("q", ids[order].tobytes())
        self.id_times = array("d", np.frombuffer(self.times, np.float64)[order].tobytes())
        del ids  # the buffer export ends: self.ids may be resized again


def encode_hook(obj):
    """msgspec's enc_hook for a state that holds Baskets."""
    if isinstance(obj, Baskets):
        return obj.columns()
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def decode_hook(typ, obj):
    """msgspec's dec_hook for a state that holds Baskets."""
    if typ is Baskets:
        return Baskets.from_columns(obj)
    raise NotImplementedError(f"cannot decode {typ}")
