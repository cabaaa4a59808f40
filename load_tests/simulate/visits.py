"""The held-out shoppers' real visits, read from the Complete Journey parquet (pantry.dataset) between two dates.

A visit is one basket: (household, store, basket_id, time) with its real lines, the coupons the household redeemed
that day (attached to its last visit of the day; a redemption on a day without a visit becomes a visit of its own,
with no basket, at the redemption's time: 00:00 UTC, the data has only the date) and the substitutions to ask about
(`substitution_asks`, the rule is in load_tests/simulate/rules.py). Visits come in time order (ts, basket_id).

The history a substitution ask needs (what the shopper bought before this visit) is the data's, not the
simulation's: every purchase before the visit's time, including those before --from.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import numpy as np
import pyarrow.compute as pc

from pantry import dataset
from pantry.settings import Settings

MAX_SUBSTITUTION_ASKS = 3  # product types per visit the simulator asks substitutes for (one request)


@dataclass(frozen=True)
class Line:
    event_id: str  # the data's id (tx-...): the event the replay would have sent for this line
    product_id: int
    quantity: int
    sales_value: float
    discounts: float


@dataclass(frozen=True)
class Redemption:
    event_id: str  # the data's id (cr-...)
    coupon_upc: int
    campaign_id: int


@dataclass(frozen=True)
class SubstitutionAsk:
    usual_product_id: int  # bought before, of the same product type, not in this basket: asked as "out of stock"
    bought_product_id: int  # what the shopper really bought of that type in this visit


@dataclass(frozen=True)
class Visit:
    customer_id: int
    ts: datetime
    store_id: int | None = None  # None: a redemption-only visit (no basket)
    basket_id: int | None = None
    lines: tuple[Line, ...] = ()
    redemptions: tuple[Redemption, ...] = ()
    substitution_asks: tuple[SubstitutionAsk, ...] = ()

    @property
    def t(self) -> float:
        return self.ts.timestamp()

    @property
    def day(self) -> date:
        return self.ts.astimezone(UTC).date()

    @property
    def product_ids(self) -> frozenset[int]:
        return frozenset(line.product_id for line in self.lines)


@dataclass
class Window:
    visits: list[Visit]
    customers: int  # households with at least one visit
    sampled_from: int  # households in the window before sampling
    redemptions: int
    asks: int = field(default=0)


def parse_day(text: str) -> datetime:
    """YYYY-MM-DD (00:00 UTC), or an RFC 3339 time (e.g. the service clock's `now`, to continue from there)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), UTC)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or an RFC 3339 time") from exc


def substitution_asks(basket: list[int], history: dict[int, Counter], types: dict[int, str],
                      limit: int = MAX_SUBSTITUTION_ASKS) -> tuple[SubstitutionAsk, ...]:
    """The rule: for each product type T in the basket, the shopper's most bought product of type T before this
    visit that is not in this basket (ties: the lower id) is "their usual item, out of stock today"; what they
    bought of type T here (the lowest id when several) is the substitute they chose. Types whose usual item was
    bought most often come first (the strongest habits), at most `limit`."""
    in_basket = set(basket)
    bought_of: dict[str, int] = {}
    for p in sorted(in_basket):
        kind = types.get(p)
        if kind is not None:
            bought_of.setdefault(kind, p)
    asks: list[tuple[int, SubstitutionAsk]] = []
    for kind, bought in bought_of.items():
        counts = history.get(kind)
        if not counts:
            continue
        usual = [(n, p) for p, n in counts.items() if p not in in_basket]
        if usual:
            n, p = min(usual, key=lambda item: (-item[0], item[1]))
            asks.append((n, SubstitutionAsk(p, bought)))
    asks.sort(key=lambda item: (-item[0], item[1].usual_product_id))
    return tuple(a for _, a in asks[:limit])


def load_window(settings: Settings, start: datetime, end: datetime, customers_share: float = 1.0,
                max_visits: int | None = None, seed: int = 0) -> Window:
    """The visits in [start, end) of a share of the households (a seeded sample), at most `max_visits` (the first
    ones in time order)."""
    cols = ["event_id", "type", "ts", "customer_id", "store_id", "basket_id", "product_id", "quantity",
            "sales_value", "discounts", "coupon_upc", "campaign_id"]
    table = dataset.read_events(settings, until=end, columns=cols)
    in_window = pc.greater_equal(table["ts"], start)
    present = pc.unique(table.filter(in_window)["customer_id"]).to_pylist()
    everyone = sorted(int(c) for c in present if c is not None)
    rng = random.Random(seed)
    chosen = everyone if customers_share >= 1.0 else sorted(
        rng.sample(everyone, max(1, round(len(everyone) * customers_share))) if everyone else [])
    table = table.filter(pc.is_in(table["customer_id"], value_set=_int_array(chosen)))
    in_window = pc.greater_equal(table["ts"], start)
    products = dataset.read_arrow(settings, "products").select(["product_id", "product_type"]).to_pydict()
    types = {int(p): t for p, t in zip(products["product_id"], products["product_type"], strict=True) if t}

    purchases = table.filter(pc.equal(table["type"], "purchase")).to_pydict()
    reds = table.filter(pc.and_(pc.equal(table["type"], "coupon_redemption"), in_window)).to_pydict()
    start_s = start.timestamp()
    history: dict[int, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    baskets: dict[int, list[int]] = defaultdict(list)  # basket -> row indexes, in the data's (time) order
    for i, b in enumerate(purchases["basket_id"]):
        baskets[b].append(i)
    visits: list[Visit] = []
    for rows in baskets.values():  # dict order = first line's order = time order
        first = rows[0]
        customer, ts = int(purchases["customer_id"][first]), purchases["ts"][first]
        basket = [int(purchases["product_id"][i]) for i in rows]
        if ts.timestamp() >= start_s:
            lines = tuple(Line(purchases["event_id"][i], int(purchases["product_id"][i]),
                               max(0, int(purchases["quantity"][i] or 0)),
                               max(0.0, float(purchases["sales_value"][i] or 0.0)),
                               max(0.0, float(purchases["discounts"][i] or 0.0))) for i in rows)
            visits.append(Visit(customer, ts, int(purchases["store_id"][first]), int(purchases["basket_id"][first]),
                                lines, (), substitution_asks(basket, history[customer], types)))
        mine = history[customer]
        for p in basket:
            kind = types.get(p)
            if kind is not None:
                mine[kind][p] += 1
    visits, n_red = _attach_redemptions(visits, reds)
    visits.sort(key=lambda v: (v.t, v.basket_id or 0, v.customer_id))
    if max_visits is not None:
        visits = visits[:max_visits]
    return Window(visits, len({v.customer_id for v in visits}), len(everyone), n_red,
                  sum(len(v.substitution_asks) for v in visits))


def _int_array(values: list[int]):
    import pyarrow as pa

    return pa.array(values, type=pa.int64())


def _attach_redemptions(visits: list[Visit], reds: dict[str, list]) -> tuple[list[Visit], int]:
    """Each redemption goes with the household's last visit of that (UTC) day, or becomes a visit of its own."""
    last_of_day: dict[tuple[int, date], int] = {}
    for i, v in enumerate(visits):
        last_of_day[(v.customer_id, v.day)] = i  # visits are in time order: the last one wins
    extra: dict[int, list[Redemption]] = defaultdict(list)
    alone: dict[tuple[int, datetime], list[Redemption]] = defaultdict(list)
    for event_id, customer, ts, upc, campaign in zip(reds["event_id"], reds["customer_id"], reds["ts"],
                                                     reds["coupon_upc"], reds["campaign_id"], strict=True):
        red = Redemption(event_id, int(upc), int(campaign))
        i = last_of_day.get((int(customer), ts.astimezone(UTC).date()))
        if i is None:
            alone[(int(customer), ts)].append(red)
        else:
            extra[i].append(red)
    out = [Visit(v.customer_id, v.ts, v.store_id, v.basket_id, v.lines, tuple(extra[i]), v.substitution_asks)
           if i in extra else v for i, v in enumerate(visits)]
    out += [Visit(customer, ts, redemptions=tuple(r)) for (customer, ts), r in alone.items()]
    return out, len(reds["event_id"])


def mean_basket(visits: list[Visit]) -> float:
    sizes = [len(v.lines) for v in visits if v.lines]
    return float(np.mean(sizes)) if sizes else 0.0
