"""Completing a basket: products that go with what is in the cart and the session (the `complete_basket` surface and
next-best-action's `cross_sell`).

Training (training/basket.py) counts, in the baskets before the cut, how often each pair of products was bought
together, and keeps each product's top MAX_NEIGHBOURS neighbours as CSR arrays (`basket_*.npy`). A request's
context (cart first, then the rest of the session) gathers its products' neighbour lists in a few array operations;
the candidates are those neighbours plus the customer's live repertoire and the most frequent products, each with
the features of `candidate_features`, scored by a LightGBM ranker (`basket_ranker.onnx`) trained on real baskets:
half of a basket as the cart, the rest as the truth. Training builds its sets with the same functions, so what is
evaluated is what is served. Numpy + onnxruntime only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pantry.models._shared import lookup_many
from pantry.models.onnx import session

FEATURE_NAMES = (
    "log_cocount_sum",
    "log_lift_max",
    "confidence_sum",
    "confidence_max",
    "cosine_max",
    "linked_share",
    "log_repertoire_score",
    "log_repertoire_rank",
    "repertoire_share",
    "in_repertoire",
    "log_basket_frequency",
    "log_context_size",
)
MAX_NEIGHBOURS = 40  # per product, by cosine (count / sqrt(freq_i * freq_j)): specific and frequent partners
MIN_BASKETS = 5  # products in fewer baskets before the cut get no neighbour list (noise)
MAX_CONTEXT = 50  # context products a request looks at (cart first, then the session, newest first)
N_POPULAR = 30  # the most frequent products join every candidate list (a cart of rarities still gets staples)
REPERTOIRE_TOP = 50  # the live customer_repertoire row's length (streaming/features/customer.py)
NO_RANK = 64.0  # the repertoire rank of a product outside it

# The arrays of a version (one .npy each); files absent from versions trained before the surface existed
ARRAYS = ("basket_products", "basket_freq", "basket_indptr", "basket_neighbours", "basket_count", "basket_total")
RANKER_FILE = "basket_ranker.onnx"
# what a reason calls a product: its product type, as codes into a list of names (absent: the id alone)
NAME_ARRAYS = ("basket_type_code", "basket_type_names")


@dataclass(frozen=True)
class CoPurchase:
    """Top co-purchased neighbours per product (CSR over `products`, sorted ids)."""

    products: np.ndarray  # int64 sorted product ids with a row
    freq: np.ndarray  # float32 baskets with the product
    indptr: np.ndarray  # int64 [n + 1]
    neighbours: np.ndarray  # int64 row index of each neighbour
    count: np.ndarray  # float32 baskets with both
    total: float  # baskets counted
    type_code: np.ndarray | None = None  # int32 per product: index into type_names, -1 unknown
    type_names: np.ndarray | None = None  # str product types, lower case
    popular: np.ndarray = field(init=False)  # int64 rows of the N_POPULAR most frequent products

    def __post_init__(self) -> None:
        object.__setattr__(self, "popular", np.argsort(-self.freq, kind="stable")[:N_POPULAR].astype(np.int64))


@dataclass
class Candidates:
    rows: np.ndarray  # int64 row indices into CoPurchase.products
    features: np.ndarray  # float32 [n, len(FEATURE_NAMES)]
    anchor: np.ndarray  # int64 the context product (id) each candidate goes with best, -1 when none
    together: np.ndarray  # float64 baskets with the candidate and its anchor (0 without one)


def context_rows(cp: CoPurchase, cart: list[int], session: list[int]) -> np.ndarray:
    """Rows of the context products known to the table: the cart, then the session's other products (newest
    first), at most MAX_CONTEXT of them."""
    seen = dict.fromkeys(cart)
    ids = list(seen) + [p for p in session if p not in seen]
    rows = lookup_many(cp.products, np.asarray(ids[:MAX_CONTEXT], dtype=np.int64))
    return rows[rows >= 0]


def candidate_features(cp: CoPurchase, context: np.ndarray, repertoire_ids: np.ndarray,
                       repertoire_scores: np.ndarray) -> Candidates:
    """Candidates for a context (row indices) and a customer's repertoire (product ids, scores, best first):
    the context's neighbours + the repertoire + the most frequent products, minus the context itself."""
    starts, ends = cp.indptr[context], cp.indptr[context + 1]
    lens = ends - starts
    pos = np.repeat(ends - lens.cumsum(), lens) + np.arange(int(lens.sum()))  # every neighbour slot, concatenated
    src = np.repeat(np.arange(len(context)), lens)
    nb, cnt = cp.neighbours[pos], cp.count[pos]
    rep_rows = lookup_many(cp.products, repertoire_ids)
    rep_ok = rep_rows >= 0
    rows, inverse = np.unique(np.concatenate([nb, rep_rows[rep_ok], cp.popular]), return_inverse=True)
    n = len(rows)
    f_src = cp.freq[context][src].astype(np.float64)
    f_dst = cp.freq[nb].astype(np.float64)
    conf = cnt / np.maximum(f_src, 1.0)
    lift = cnt * cp.total / np.maximum(f_src * f_dst, 1.0)
    cosine = cnt / np.sqrt(np.maximum(f_src * f_dst, 1.0))
    j = inverse[: len(nb)]
    cocount = np.bincount(j, weights=cnt, minlength=n)
    conf_sum = np.bincount(j, weights=conf, minlength=n)
    linked = np.bincount(j, minlength=n).astype(np.float64)
    lift_max = np.zeros(n)
    np.maximum.at(lift_max, j, np.log(np.maximum(lift, 1.0)))
    conf_max = np.zeros(n)
    np.maximum.at(conf_max, j, conf)
    cos_max = np.full(n, -1.0)
    np.maximum.at(cos_max, j, cosine)
    # the context product each candidate goes with best (highest cosine): the reason's anchor
    anchor = np.full(n, -1, dtype=np.int64)
    together = np.zeros(n)
    if len(nb):
        best = np.lexsort((-cosine, j))  # per candidate, best link first
        first = best[np.r_[True, j[best][1:] != j[best][:-1]]]
        anchor[j[first]] = cp.products[context[src[first]]]
        together[j[first]] = cnt[first]
    rep_score = np.zeros(n)
    rep_rank = np.full(n, NO_RANK)
    scores = np.asarray(repertoire_scores, dtype=np.float64)
    if rep_ok.any():
        at = np.searchsorted(rows, rep_rows[rep_ok])
        rep_score[at] = scores[rep_ok]
        rep_rank[at] = np.flatnonzero(rep_ok)
    total_rep = max(float(scores[rep_ok].sum()) if rep_ok.any() else 0.0, 1e-9)
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = np.log1p(cocount)
    out[:, 1] = lift_max
    out[:, 2] = conf_sum
    out[:, 3] = conf_max
    out[:, 4] = np.maximum(cos_max, 0.0)
    out[:, 5] = linked / max(len(context), 1)
    out[:, 6] = np.log1p(rep_score)
    out[:, 7] = np.log1p(rep_rank)
    out[:, 8] = rep_score / total_rep
    out[:, 9] = rep_score > 0
    out[:, 10] = np.log1p(cp.freq[rows])
    out[:, 11] = np.log1p(len(context))
    keep = ~np.isin(rows, context)  # what is already in the context is not a completion of it
    return Candidates(rows[keep], out[keep], anchor[keep], together[keep])


def load_copurchase(directory: Path) -> CoPurchase | None:
    """The version's co-purchase table, or None for a version trained before the surface existed."""
    if not all((directory / f"{name}.npy").exists() for name in ARRAYS):
        return None
    names = ARRAYS + (NAME_ARRAYS if all((directory / f"{n}.npy").exists() for n in NAME_ARRAYS) else ())
    a = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in names}
    return CoPurchase(a["basket_products"], a["basket_freq"], a["basket_indptr"], a["basket_neighbours"],
                      a["basket_count"], float(a["basket_total"][0]), a.get("basket_type_code"),
                      a.get("basket_type_names"))


@dataclass(frozen=True)
class Completion:
    product_id: int
    score: float
    anchor: int  # the context product it goes with best, -1 when it comes from the repertoire or popularity only
    together: int  # baskets with it and the anchor (0 without an anchor)
    anchor_in_cart: bool  # the anchor is in the cart (else it is a product of the session: viewed, bought...)
    anchor_name: str = ""  # the anchor's product type ("" unknown)

    @property
    def reason(self) -> str:
        """'goes with 1106523 (fluid milk white only) in your cart (bought together in 1147 baskets)'."""
        if self.anchor < 0:
            return "often in your baskets"
        name = f" ({self.anchor_name})" if self.anchor_name else ""
        where = "in your cart" if self.anchor_in_cart else "you looked at"
        return f"goes with {self.anchor}{name} {where} (bought together in {self.together} baskets)"


class BasketCompleter:
    """Ranks what goes with a cart and session. Loaded from a recommender or next-best-action version directory."""

    def __init__(self, cp: CoPurchase, ranker_bytes: bytes | None):
        self.cp = cp
        self.ranker = session(ranker_bytes) if ranker_bytes is not None else None

    @classmethod
    def load(cls, directory: Path) -> BasketCompleter | None:
        cp = load_copurchase(directory)
        if cp is None:
            return None
        ranker = directory / RANKER_FILE
        return cls(cp, ranker.read_bytes() if ranker.exists() else None)

    def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.empty(0, dtype=np.float32)
        if self.ranker is None:  # no learned ranker (tiny data): co-purchase confidence, then the repertoire
            return features[:, 2] + 0.5 * features[:, 8]
        # the binary ranker's probability that the product is in the rest of the basket
        return self.ranker.run(["prob"], {"features": features})[0][:, 0]

    def complete(self, cart: list[int], session: list[int], repertoire_ids: list[int],
                 repertoire_scores: list[float], *, k: int, exclude: frozenset[int] = frozenset(),
                 allowed: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Completion]:
        """The k best completions of this context, best first (empty when no context product is known).
        `allowed`: product ids -> a mask of those a candidate may be (e.g. what the store stocks), None for any."""
        context = context_rows(self.cp, cart, session)
        if len(context) == 0:
            return []
        ids = np.asarray(repertoire_ids[:REPERTOIRE_TOP], dtype=np.int64)
        scores = np.asarray(repertoire_scores[: len(ids)], dtype=np.float64)
        if len(scores) < len(ids):
            scores = np.concatenate([scores, np.ones(len(ids) - len(scores))])
        cands = candidate_features(self.cp, context, ids, scores)
        pids = self.cp.products[cands.rows]
        keep = np.ones(len(pids), dtype=bool)
        if exclude:
            keep &= ~np.isin(pids, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
        if allowed is not None:
            keep &= allowed(pids)
        s = self.score(cands.features[keep])
        pids, anchor, together = pids[keep], cands.anchor[keep], cands.together[keep]
        order = np.argsort(-s, kind="stable")[:k]
        in_cart = set(cart)
        return [Completion(int(pids[j]), float(s[j]), int(anchor[j]), round(float(together[j])),
                           int(anchor[j]) in in_cart, self.name(int(anchor[j]))) for j in order]

    def name(self, product_id: int) -> str:
        """The product's type in lower case, "" when unknown."""
        cp = self.cp
        if cp.type_code is None or cp.type_names is None or product_id < 0:
            return ""
        row = int(np.searchsorted(cp.products, product_id))
        if row >= len(cp.products) or int(cp.products[row]) != product_id or cp.type_code[row] < 0:
            return ""
        return str(cp.type_names[cp.type_code[row]])
