"""The drift report (what `GET /admin/drift`, the `pantry_drift_psi` gauge and `pantry drift report` show): for each
model, its ACTIVE version and the newest others, the live counts of the last `drift_window_days` UTC days against
the version's reference (pantry/drift.py).

Reading the counts is the caller's (async in serving, sync in the CLI): `plan()` says which hashes to read,
`assemble()` turns what was read into the report.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

import msgspec

from pantry import drift, keys
from pantry.models import registry
from pantry.scoring import MODEL_NAMES, ModelError
from pantry.settings import Settings

RECENT_VERSIONS = 5  # besides the ACTIVE one, the newest versions reported (an experiment's treatment is one of them)


class Thresholds(msgspec.Struct, frozen=True):
    moderate: float
    significant: float
    min_count: int


class ModelDrift(msgspec.Struct, frozen=True):
    model: str
    version: str
    active: bool
    status: Literal["ok", "no reference"]  # "no reference": trained before drift references existed
    live_count: int  # live decisions counted in the window
    worst: drift.Status | None  # the worst feature status (None: no reference)
    trained_until: str | None
    reference_sample: int
    features: list[drift.FeatureDrift]


class DriftReport(msgspec.Struct, frozen=True):
    generated_at: datetime
    window_days: int
    days: list[str]  # the UTC days summed (YYYYMMDD)
    thresholds: Thresholds
    models: list[ModelDrift]


_RANK = {"stable": 0, "insufficient": 1, "moderate": 2, "significant": 3}


@cache
def _reference_at(path: Path, mtime_ns: int) -> drift.DriftReference | None:
    try:
        return drift.decode_reference(path.read_bytes())
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def load_reference(models_dir: Path, model: str, version: str) -> drift.DriftReference | None:
    """A version's reference, None when it has none (a version dir is immutable once published: cached)."""
    if "/" in version or version.startswith("."):
        return None
    path = Path(models_dir) / model / version / drift.REFERENCE_FILE
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    return _reference_at(path, mtime)


def window_days(days: int, today: datetime | None = None) -> list[str]:
    today = today or datetime.now(UTC)
    return [f"{today - timedelta(days=i):%Y%m%d}" for i in range(max(days, 1))]


def plan(settings: Settings, active: dict[str, str | None] | None = None
         ) -> list[tuple[str, str, bool, list[str]]]:
    """(model, version, active?, hash keys to read) for every reported version. `active`: the versions a worker
    serves (default: ACTIVE on disk)."""
    out = []
    days = window_days(settings.drift_window_days)
    for model in MODEL_NAMES:
        try:
            current = (active or {}).get(model) or registry.active_version(settings.models_dir, model)
            versions = registry.versions(settings.models_dir, model)
        except ModelError:
            continue
        chosen = list(dict.fromkeys([v for v in (current,) if v] + versions[::-1][:RECENT_VERSIONS]))
        for version in chosen:
            out.append((model, version, version == current, [keys.drift_key(model, version, d) for d in days]))
    return out


def assemble(settings: Settings, planned: list[tuple[str, str, bool, list[str]]],
             hashes: list[list[dict[Any, Any]]]) -> DriftReport:
    """The report from plan() and, per planned version, the hashes read (one per day key, {} when absent). A
    non-active version with no reference and no live count is left out (nothing to say about it)."""
    thresholds = Thresholds(settings.drift_moderate, settings.drift_significant, settings.drift_min_count)
    models = []
    for (model, version, active, _keys), got in zip(planned, hashes, strict=True):
        counts = drift.parse_counts(got)
        live = sum(counts.get("score.top", {}).values())
        reference = load_reference(settings.models_dir, model, version)
        if reference is None:
            if active or live:
                models.append(ModelDrift(model, version, active, "no reference", live, None, None, 0, []))
            continue
        if not active and not live:
            continue
        features = drift.compare(reference, counts, moderate=thresholds.moderate,
                                 significant=thresholds.significant, min_count=thresholds.min_count)
        worst = max((f.status for f in features), key=_RANK.__getitem__, default=None)
        models.append(ModelDrift(model, version, active, "ok", live, worst, reference.trained_until,
                                 reference.sample, features))
    days = window_days(settings.drift_window_days)
    return DriftReport(datetime.now(UTC), settings.drift_window_days, days, thresholds, models)


def read_sync(settings: Settings, client) -> DriftReport:
    """The report with a synchronous Redis client (the CLI)."""
    planned = plan(settings)
    pipe = client.pipeline(transaction=False)
    for *_rest, day_keys in planned:
        for key in day_keys:
            pipe.hgetall(key)
    flat = pipe.execute() if planned else []
    hashes, i = [], 0
    for *_rest, day_keys in planned:
        hashes.append(flat[i : i + len(day_keys)])
        i += len(day_keys)
    return assemble(settings, planned, hashes)
