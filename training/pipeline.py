"""`pantry train`: fit, export, check parity, write the registry, (maybe) activate, push embeddings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pantry.models import registry
from pantry.models.onnx import session
from pantry.models.recommender_candidates import FEATURE_NAMES, LABEL_DAYS, N_NEW
from pantry.scoring import MODEL_NAMES, ModelError
from pantry.settings import Settings
from training import basket, drift_reference, embeddings, nba, recommender, substitutions
from training.als import AlsParams
from training.data import data_digest, load_purchases
from training.onnx_export import PARITY_TOLERANCE, ranker_parity
from training.timing import Timer

FEATURE_SERVICES = {
    "recommender": "recommendations_v1",
    "substitutions": "substitutions_v1",
    "next_best_action": "next_best_action_v1",
}


@dataclass
class TrainResult:
    versions: dict[str, str] = field(default_factory=dict)
    activated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)


def up_to_date(models_dir: Path, name: str, until: datetime, digest: str) -> bool:
    version = registry.active_version(models_dir, name)
    if version is None:
        return False
    try:
        manifest = registry.read_manifest(models_dir / name / version)
    except ModelError:
        return False
    return manifest.trained_until == until.isoformat() and manifest.data_digest == digest


def _manifest(name: str, version: str, until: datetime, digest: str, params: dict, metrics: dict,
              timings: dict[str, float]) -> registry.Manifest:
    return registry.Manifest(
        name=name, version=version, trained_until=until.isoformat(), data_digest=digest,
        feature_service=FEATURE_SERVICES[name], created_at=datetime.now(UTC).isoformat(),
        files={}, params=params, metrics=metrics, timings_s=timings,
    )


def _publish(staging: Path, manifest: registry.Manifest, sample: drift_reference.Sample, timer: Timer) -> None:
    """Write the version's drift reference into the staging dir, then publish (the manifest hashes it too). A
    reference that cannot be built is reported, not fatal: the version serves, and drift says "no reference"."""
    with timer.step(f"{manifest.name}: drift reference"):
        try:
            drift_reference.write_reference(sample, manifest.name, staging, manifest)
        except Exception as exc:
            timer.echo(f"  {manifest.name}: drift reference skipped ({type(exc).__name__}: {exc})")
    manifest.timings_s[f"{manifest.name}: drift reference"] = timer.steps.get(f"{manifest.name}: drift reference", 0.0)
    registry.publish(staging, manifest)


def push_embeddings(settings: Settings, version_dir: Path, echo: Callable[[str], None]) -> None:
    """Write the recommender version's user factors to the parquet source and (when reachable) the online store."""
    manifest = registry.read_manifest(version_dir)
    customers = np.load(version_dir / "customers.npy")
    factors = np.load(version_dir / "user_factors.npy")
    ts = datetime.fromisoformat(manifest.trained_until)
    embeddings.write_parquet(settings, customers, factors, manifest.version, ts)
    try:
        n = embeddings.push_online(settings, customers, factors, manifest.version, ts)
        echo(f"  customer_embedding: {n:,} rows online ({manifest.version})")
    except Exception as exc:  # the online store is optional for training; serving falls back to the artifact
        echo(f"  customer_embedding: online push skipped ({exc})")


def train(
    settings: Settings,
    until: datetime,
    *,
    only: Sequence[str] = MODEL_NAMES,
    activate: bool = False,
    force: bool = False,
    als_params: AlsParams | None = None,
    echo: Callable[[str], None] | None = None,
    push: bool = True,
) -> TrainResult:
    timer = Timer(echo=echo)
    say = timer.echo
    result = TrainResult()
    digest = data_digest(settings, until)  # the data set's, and the event archive's before `until`
    models_dir = settings.models_dir
    todo = [n for n in only if force or not up_to_date(models_dir, n, until, digest)]
    result.skipped = [n for n in only if n not in todo]
    for n in result.skipped:
        say(f"{n}: ACTIVE version already trained until {until.date()} on this data (use --force to retrain)")
    if not todo:
        return result
    params = als_params or AlsParams()
    with timer.step("load purchases"):
        purchases = load_purchases(settings, until)
    if purchases.empty:
        raise ModelError(f"no purchases before {until.isoformat()}: nothing to train on")
    version = registry.new_version(digest)
    shared_steps = dict(timer.steps)
    fitted_rec = None

    if "recommender" in todo or "substitutions" in todo:
        fitted_rec = recommender.fit(purchases, until, params, timer, rerank="recommender" in todo)
    # the co-purchase table and its ranker: complete_basket (recommender) and cross_sell (next_best_action), fitted
    # once and written into each version
    fitted_basket = (basket.fit(purchases, until, timer, basket.product_types(settings))
                     if {"recommender", "next_best_action"} & set(todo) else None)

    sample = drift_reference.Sample(
        settings, purchases, until, int(fitted_rec.user_factors.shape[1]) if fitted_rec is not None else 0,
        fitted_rec.index.customers if fitted_rec is not None else np.empty(0, dtype=np.int64))

    if "recommender" in todo:
        with timer.step("recommender: ONNX export + parity + registry"):
            staging = registry.staging_dir(models_dir, "recommender", version)
            recommender.save(fitted_rec, staging)
            basket.save(fitted_basket, staging)
            max_diff = recommender.parity(fitted_rec, session((staging / "model.onnx").read_bytes()))
            if max_diff > PARITY_TOLERANCE:
                raise ModelError(f"ONNX parity failed: max abs diff {max_diff:.2e} > {PARITY_TOLERANCE}")
            metrics = {
                "onnx_parity_max_abs_diff": max_diff,
                "customers": len(fitted_rec.index.customers),
                "products": len(fitted_rec.index.products),
                "purchase_lines": len(purchases),
            }
            if fitted_rec.reranker is not None:
                # real candidate rows (tree thresholds sit where the data is) plus random ones
                _u, real = recommender.batch_candidates(
                    np.arange(min(32, len(fitted_rec.index.customers))), fitted_rec.hist, fitted_rec.user_factors,
                    fitted_rec.item_factors, fitted_rec.stats)
                noise = np.random.default_rng(0).normal(size=(256, len(FEATURE_NAMES)))
                x = np.concatenate([c.features for c in real] + [noise]).astype(np.float32)
                metrics["reranker_parity_max_abs_diff"] = ranker_parity(
                    (staging / "reranker.onnx").read_bytes(), fitted_rec.reranker, x)
            params_doc = {"als": params.__dict__, "top_k": recommender.TOP_K, "n_new": N_NEW,
                          "label_days": LABEL_DAYS,
                          "reranker_weights": fitted_rec.reranker.params() if fitted_rec.reranker else None}
        steps = {k: v for k, v in timer.steps.items() if k.startswith("recommender") or k in shared_steps}
        _publish(staging, _manifest("recommender", version, until, digest, params_doc, metrics, steps), sample, timer)
        result.versions["recommender"] = version
        say(f"recommender {version}: ONNX parity max abs diff {max_diff:.2e}")

    if "substitutions" in todo:
        staging = registry.staging_dir(models_dir, "substitutions", version)
        params_doc, metrics = substitutions.train_and_save(settings, purchases, until, fitted_rec, staging, timer)
        steps = {k: v for k, v in timer.steps.items() if k.startswith("substitutions") or k in shared_steps}
        _publish(staging, _manifest("substitutions", version, until, digest, params_doc, metrics, steps), sample, timer)
        result.versions["substitutions"] = version

    if "next_best_action" in todo:
        staging = registry.staging_dir(models_dir, "next_best_action", version)
        params_doc, metrics = nba.train_and_save(settings, purchases, until, staging, timer)
        basket.save(fitted_basket, staging)
        steps = {k: v for k, v in timer.steps.items() if k.startswith("next_best_action") or k in shared_steps}
        _publish(staging, _manifest("next_best_action", version, until, digest, params_doc, metrics, steps), sample,
                 timer)
        result.versions["next_best_action"] = version

    for name, v in result.versions.items():
        if activate or registry.active_version(models_dir, name) is None:
            registry.activate(models_dir, name, v)
            result.activated.append(name)
            say(f"{name}: ACTIVE -> {v}")
            if name == "recommender" and push:
                with timer.step("recommender: push customer_embedding"):
                    push_embeddings(settings, models_dir / name / v, say)
        else:
            say(f"{name}: trained {v}; ACTIVE unchanged (use `pantry models activate {name} {v}`)")
    result.timings_s = dict(timer.steps)
    return result
