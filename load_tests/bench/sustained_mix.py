"""The sustained bench's events: two mixes of purchases, each with the same heavy customers and hot pair.

Both mixes draw each event's kind the same way (a roll per event):
  - 10% from 10 heavy customers (ids 1-10), views and purchases alternating over 500 products at 20 stores, each
    purchase a new basket: sessions with 100+ products and 28-day windows with 100+ baskets within a minute;
  - 5% purchases on one hot store x product pair (store 1, product 1);
  - the other 85% are the mix's ordinary purchases.

`chain` (the default, `ChainMix`): the ordinary purchases are the Complete Journey's purchase lines in their order
(`events.parquet` of `pantry data load`), each with its own household, store, basket, product, units and value, re-timed
to the run's clock: a chain's checkouts, a basket's ~9.4 lines one after another, products and stores as skewed
as a grocer's (631k store x product pairs, 155,848 baskets, 2,469 households a pass). After the last line the next
pass sends the same lines as new baskets (basket ids offset): the same shoppers and shelves, the next year's trips.
Household ids are offset by 10,000 so they never meet the heavy customers'.

`uniform` (`uniform_event`): the ordinary purchases are 5,000 customers buying uniformly random products (1-89,999)
at uniformly random stores (1-399), each line its own basket: a new store x product pair nearly every purchase
(36M possible) and a new basket every line. No grocer's day looks like it; it is the worst case for state growth,
kept as the stress variant (`PANTRY_BENCH_SUSTAINED_MIX=uniform`). docs/DECISIONS.md "Which mix does the sustained
bench send?".
"""

from __future__ import annotations

import random
from array import array
from datetime import datetime

import numpy as np

HEAVY_SHARE = 0.10
HOT_SHARE = 0.05
HEAVY_CUSTOMERS = 10
HOUSEHOLD_OFFSET = 10_000  # Complete Journey households are 1-2,500; the heavy customers are 1-10
PASS_BASKET_OFFSET = 10**11  # above the Complete Journey's basket ids (< 4.2e10): each pass's baskets are new
MIXES = ("chain", "uniform")


def _heavy_or_hot(rng: random.Random, seq: int, ts: datetime, heavy_views: list[int]):
    """The event of a heavy customer or of the hot pair, or None for an ordinary purchase (85%)."""
    from pantry import events

    roll = rng.random()
    if roll < HEAVY_SHARE:  # a heavy customer: a view or a purchase over a small catalogue, each purchase a basket
        customer = 1 + seq % HEAVY_CUSTOMERS
        product = 1 + rng.randrange(500)
        heavy_views[0] += 1
        if heavy_views[0] % 2:
            return events.ProductView(event_id=f"s-{seq}", ts=ts, customer_id=customer, product_id=product)
        return events.Purchase(event_id=f"s-{seq}", ts=ts, customer_id=customer, store_id=1 + rng.randrange(20),
                               basket_id=seq, product_id=product, sales_value=1.0)
    if roll < HEAVY_SHARE + HOT_SHARE:
        return events.Purchase(event_id=f"s-{seq}", ts=ts, customer_id=100 + rng.randrange(5000), store_id=1,
                               basket_id=seq, product_id=1, sales_value=1.0)
    return None


def uniform_event(rng: random.Random, seq: int, ts: datetime, heavy_views: list[int]):
    """The uniform mix's event number `seq` (module docstring)."""
    from pantry import events

    e = _heavy_or_hot(rng, seq, ts, heavy_views)
    if e is not None:
        return e
    return events.Purchase(event_id=f"s-{seq}", ts=ts, customer_id=100 + rng.randrange(5000),
                           store_id=rng.randrange(1, 400), basket_id=seq,
                           product_id=rng.randrange(1, 90_000), sales_value=1.0)


class ChainMix:
    """The chain mix (module docstring): `event(seq, ts)` is event number `seq`, deterministic for a seed."""

    def __init__(self, lines: dict[str, np.ndarray], seed: int = 1):
        order = np.lexsort((lines["basket_id"], lines["ts"]))  # event-time order, a basket's lines together
        self._lines = [array(code, lines[c][order].astype(dtype).tobytes()) for c, code, dtype in
                       (("customer_id", "q", "<i8"), ("store_id", "q", "<i8"), ("basket_id", "q", "<i8"),
                        ("product_id", "q", "<i8"), ("quantity", "q", "<i8"), ("sales_value", "d", "<f8"))]
        # arrays, not lists: 8 B a value in the generator's process, not a Python object each
        self._rng, self._heavy, self._next, self._pass = random.Random(seed), [0], 0, 0

    @classmethod
    def from_settings(cls, settings, seed: int = 1) -> ChainMix:
        import pyarrow.compute as pc

        from pantry.dataset import read_events

        t = read_events(settings, columns=["type", "ts", "customer_id", "store_id", "basket_id", "product_id",
                                           "quantity", "sales_value"])
        t = t.filter(pc.equal(t["type"], "purchase"))
        lines = {c: t[c].to_numpy() for c in t.column_names if c != "type"}
        lines["ts"] = t["ts"].cast("int64").to_numpy()
        return cls(lines, seed)

    def event(self, seq: int, ts: datetime):
        from pantry import events

        e = _heavy_or_hot(self._rng, seq, ts, self._heavy)
        if e is not None:
            return e
        i = self._next
        customers, stores, baskets, products, units, values = self._lines
        e = events.Purchase(event_id=f"s-{seq}", ts=ts, customer_id=HOUSEHOLD_OFFSET + customers[i],
                            store_id=stores[i], basket_id=baskets[i] + self._pass * PASS_BASKET_OFFSET,
                            product_id=products[i], quantity=max(0, units[i]), sales_value=max(0.0, values[i]))
        self._next = i + 1
        if self._next == len(customers):  # the last line of a pass: the next is the first of the next pass
            self._next, self._pass = 0, self._pass + 1
        return e


def mix(settings, name: str, seed: int):
    """`event(seq, ts)` of the named mix (MIXES)."""
    if name == "chain":
        return ChainMix.from_settings(settings, seed).event
    if name == "uniform":
        rng, heavy = random.Random(seed), [0]
        return lambda seq, ts: uniform_event(rng, seq, ts, heavy)
    raise ValueError(f"PANTRY_BENCH_SUSTAINED_MIX must be one of {', '.join(MIXES)}, not {name!r}")
