"""`pantry evaluate`: the three evaluation protocols (fixed by the issue) on the loaded data, a timed full retrain,
and docs/MODEL_REPORT.md from the figures of that run.

Each protocol evaluates the served path: trained by the same code as `pantry train` at the protocol's cut and
scored through the runtime scorers' code (training/evaluate_recommender.py, evaluate_substitutions.py,
evaluate_nba.py); baselines are recomputed in the same run.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from pantry import dataset
from pantry.scoring import MODEL_NAMES
from pantry.settings import Settings
from training.data import default_until, load_purchases
from training.evaluate_basket import evaluate_basket
from training.evaluate_nba import evaluate_nba
from training.evaluate_recommender import evaluate_recommender
from training.evaluate_substitutions import evaluate_substitutions
from training.pipeline import train
from training.report import write_report
from training.timing import Timer


def run_all(settings: Settings, out: Path, only: Sequence[str] = MODEL_NAMES) -> dict[str, Any]:
    timer = Timer()
    report: dict[str, Any] = {"data": dataset.manifest(settings).events_sha256,
                              "started_at": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
    with timer.step("load purchases"):
        purchases = load_purchases(settings, default_until(settings), archive=False)  # the data set's protocol
    with tempfile.TemporaryDirectory(prefix="pantry-eval-") as tmp:
        scratch = Path(tmp)
        if "recommender" in only:
            report["recommender"] = evaluate_recommender(purchases, scratch, timer)
            report["complete_basket"] = evaluate_basket(purchases, timer)  # the recommender's cart surface
        if "substitutions" in only:
            report["substitutions"] = evaluate_substitutions(settings, purchases, timer)
        if "next_best_action" in only:
            report["next_best_action"] = evaluate_nba(settings, purchases, timer)
    report["eval_timings_s"] = dict(timer.steps)
    with timer.step("full retrain (all models, as `pantry train`)"):
        report["retrain"] = _timed_retrain(settings)
    write_report(report, out)
    return report


def _timed_retrain(settings: Settings) -> dict[str, Any]:
    """A full `pantry train --force` of all three models into a scratch registry, timed step by step."""
    with tempfile.TemporaryDirectory(prefix="pantry-retrain-") as tmp:
        scratch = msgspec.structs.replace(settings, artifacts_dir=Path(tmp))
        start = time.perf_counter()
        result = train(scratch, default_until(settings), activate=True, force=True, push=False)
        total = time.perf_counter() - start
    return {"total_s": total, "steps_s": result.timings_s, "versions": result.versions}
