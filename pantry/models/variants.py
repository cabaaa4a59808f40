"""Baseline variants: registry versions whose manifest says `params.variant`, built from a trained version's files.

They are references for experiments (is the trained model better than something simple?) and for guardrail
drills (does a bad treatment get stopped?):
- recommender `popularity`: the model's own popularity list (store popularity when a store is given, else global),
  with the same store filter and exclusions as the trained answer;
- recommender `random`: random scorable items (store filter and exclusions applied): a deliberately bad reference;
- recommender `failing`: raises on every request, so every answer is the `model_error` fallback (a broken
  treatment, for the fallback-rate guardrail);
- next_best_action `rule`: the best simple rule of the offline evaluation (training/evaluate_nba.py, "redeemed-
  before, then affinity": coupons the customer redeemed before first, then by past purchases of the coupon's
  products, then by how many customers buy them), with the same buy-again nudges when no coupon fits and the
  same cross-sell from the cart.

`publish_baseline` makes one from the ACTIVE version (hard links, else copies; a new manifest); it is not activated.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import numpy as np

from pantry.models.next_best_action import NextBestAction, candidates
from pantry.models.recommender import Recommender
from pantry.models.registry import MANIFEST, Manifest, active_version, publish, read_manifest, staging_dir
from pantry.scoring import Action, Features, ModelError, Scored

VARIANTS: dict[str, tuple[str, ...]] = {
    "recommender": ("popularity", "random", "failing"),
    "next_best_action": ("rule",),
    "substitutions": (),
}


class PopularityRecommender(Recommender):
    def warm(self, limit: int | None = None) -> int:
        return 0  # nothing per customer to rank

    def recommend(self, features: Features, *, customer_id: int, k: int, surface, exclude: frozenset[int],
                  store_id: int | None) -> list[Scored]:
        return self.popular(k=k, store_id=store_id, exclude=exclude, mask=self._store_mask(store_id))


class RandomRecommender(Recommender):
    def warm(self, limit: int | None = None) -> int:
        return 0

    def recommend(self, features: Features, *, customer_id: int, k: int, surface, exclude: frozenset[int],
                  store_id: int | None) -> list[Scored]:
        items = self.scorable
        mask = self._store_mask(store_id)
        if mask is not None and mask[items].any():
            items = items[mask[items]]
        picks = np.random.default_rng().choice(len(items), size=min(len(items), k + len(exclude)), replace=False)
        out = [Scored(int(self.products[items[j]]), 0.0, "picked at random (a baseline)") for j in picks]
        return [s for s in out if s.product_id not in exclude][:k]


class FailingRecommender(Recommender):
    def warm(self, limit: int | None = None) -> int:
        return 0

    def recommend(self, *args, **kwargs) -> list[Scored]:
        raise RuntimeError("the `failing` baseline variant fails every request (a guardrail drill)")


class RuleNextBestAction(NextBestAction):
    def actions(self, features: Features, *, customer_id: int, campaign_ids: frozenset[int], k: int, channel,
                now: datetime) -> list[Action]:
        day = now.timestamp() / 86_400.0
        if int(customer_id) in self.hidden:
            customer_id = -1
        ids = np.fromiter(campaign_ids, dtype=np.int64, count=len(campaign_ids))
        cpn, camp = candidates(self.t, int(customer_id), ids, day)
        out: list[Action] = []
        if len(cpn):
            x = self._rows(self.t, int(customer_id), cpn, camp, day)
            order = np.lexsort((-x[:, 5], -x[:, 1], -x[:, 3]))[:k]  # redeemed before, then affinity, then buyers
            out = [Action(action_type="coupon", score=1.0 / (rank + 1), rationale=self._rationale(x[j], int(camp[j])),
                          campaign_id=int(self.t.campaigns[camp[j]]), coupon_upc=int(self.t.coupons[cpn[j]]))
                   for rank, j in enumerate(order.tolist())]
        return self._finish(out, features, int(customer_id), k)  # the model's nudges and cross-sell


_CLASSES = {("recommender", "popularity"): PopularityRecommender, ("recommender", "random"): RandomRecommender,
            ("recommender", "failing"): FailingRecommender, ("next_best_action", "rule"): RuleNextBestAction}


def variant_of(manifest: Manifest) -> str | None:
    value = manifest.params.get("variant")
    return str(value) if value else None


def build(name: str, directory: Path, manifest: Manifest, recommender_cache: int | None = None):
    """The scorer of a variant version (ModelError for a variant this model does not have)."""
    variant = variant_of(manifest)
    kind = _CLASSES.get((name, variant or ""))
    if kind is None:
        raise ModelError(f"{name} {manifest.version}: unknown variant {variant!r} (have: "
                         f"{', '.join(VARIANTS.get(name, ())) or 'none'})")
    if name == "recommender":
        return kind(directory, manifest, cache_size=0)  # nothing worth caching per customer
    return kind(directory, manifest)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def publish_baseline(models_dir: Path, name: str, variant: str) -> str:
    """Publish `<active>-<variant>` from the ACTIVE version's files; returns the new version (not activated)."""
    if variant not in VARIANTS.get(name, ()):
        raise ModelError(f"{name} has no variant {variant!r} (have: {', '.join(VARIANTS.get(name, ())) or 'none'})")
    active = active_version(models_dir, name)
    if active is None:
        raise ModelError(f"{name} has no ACTIVE version to build a baseline from")
    source = models_dir / name / active
    manifest = read_manifest(source)
    if variant_of(manifest):
        raise ModelError(f"{name} {active} is itself a baseline ({variant_of(manifest)}): activate a trained version")
    version = f"{active}-{variant}"
    if (models_dir / name / version).exists():
        raise ModelError(f"{name} {version} already exists")
    staging = staging_dir(models_dir, name, version)
    for path in sorted(source.iterdir()):
        if path.is_file() and path.name != MANIFEST:
            _link_or_copy(path, staging / path.name)
    new = msgspec.structs.replace(manifest, version=version, created_at=datetime.now(UTC).isoformat(),
                                  params={**manifest.params, "variant": variant, "variant_of": active},
                                  metrics={})
    publish(staging, new)
    return version


def ensure_baseline(models_dir: Path, name: str, variant: str) -> str:
    """`<active>-<variant>`, published from the ACTIVE version unless it already exists; returns the version."""
    active = active_version(models_dir, name)
    version = f"{active}-{variant}"
    if active is None or not (models_dir / name / version).exists():
        version = publish_baseline(models_dir, name, variant)
    return version
