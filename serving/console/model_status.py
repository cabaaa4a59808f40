"""What the models page shows, gathered in few reads: each model's versions (the manifest's training figures and the
version's online KPIs from pantry:kpis:*), which is ACTIVE and loaded, and each experiment with its per-arm KPIs,
95% intervals and guardrail state (the same functions as GET /admin/experiments/{id}, on one read of the totals)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import msgspec

from pantry import guardrails
from pantry.experiments import Experiment
from pantry.guardrails import ArmReport, Breach, Comparison
from pantry.kpis import Counts, KpiKey
from pantry.models import registry
from pantry.scoring import MODEL_NAMES, ModelError
from serving import experiments, governance
from serving.services import Services

EXPERIMENTS_SHOWN = 10  # newest first; older ones stay in GET /admin/experiments


class VersionRow(msgspec.Struct):
    version: str
    active: bool
    loaded: bool
    trained_until: str
    created_at: str
    figures: dict[str, Any]  # the manifest's metrics (customers, products, ONNX parity, ...)
    online: Counts  # every decision this version answered, summed over days, experiments and surfaces

    @property
    def ctr(self) -> float | None:
        return self.online.clicks / self.online.impressions if self.online.impressions else None

    @property
    def conversion(self) -> float | None:
        return self.online.converted / self.online.decisions if self.online.decisions else None

    @property
    def fallback_rate(self) -> float | None:
        return self.online.fallbacks / self.online.decisions if self.online.decisions else None


class ModelRow(msgspec.Struct):
    name: str
    active: str | None
    loaded: str | None
    can_roll_back: bool
    versions: list[VersionRow]  # newest first


class ExperimentRow(msgspec.Struct):
    experiment: Experiment
    control: ArmReport
    treatment: ArmReport
    difference: Comparison
    guardrail: Breach | None  # what the guardrails say about the totals now (None: they hold)


@functools.lru_cache(maxsize=512)
def _manifest(version_dir: Path, mtime_ns: int) -> registry.Manifest | None:
    try:
        return registry.read_manifest(version_dir)
    except ModelError:
        return None


def manifest(version_dir: Path) -> registry.Manifest | None:
    """The version's manifest, read once per file version (a page shows dozens)."""
    try:
        return _manifest(version_dir, (version_dir / registry.MANIFEST).stat().st_mtime_ns)
    except OSError:
        return None


def _figures(m: registry.Manifest | None) -> dict[str, Any]:
    if m is None:
        return {}
    return {k: v for k, v in m.metrics.items() if isinstance(v, (int, float, str))}


def by_version(totals: dict[KpiKey, Counts]) -> dict[tuple[str, str], Counts]:
    out: dict[tuple[str, str], Counts] = {}
    for key, counts in totals.items():
        out.setdefault((key.model, key.version), Counts()).add(counts)
    return out


def model_rows(svc: Services, totals: dict[KpiKey, Counts]) -> list[ModelRow]:
    online = by_version(totals)
    rows = []
    for name in MODEL_NAMES:
        view = governance.model_view(svc, name)
        history = registry.history(svc.settings.models_dir, name)
        versions = []
        for version in reversed(view.versions):
            m = manifest(svc.settings.models_dir / name / version)
            versions.append(VersionRow(version, version == view.active, version == view.loaded,
                                       m.trained_until[:10] if m else "?", m.created_at[:19] if m else "?",
                                       _figures(m), online.get((name, version), Counts())))
        earlier = [v for v in history if v != view.active and v in view.versions]
        rows.append(ModelRow(name, view.active, view.loaded, bool(earlier), versions))
    return rows


def experiment_rows(listing: list[Experiment], totals: dict[KpiKey, Counts]) -> list[ExperimentRow]:
    newest = sorted(listing, key=lambda e: e.created_at, reverse=True)[:EXPERIMENTS_SHOWN]
    rows = []
    for exp in newest:
        control, treatment, versions = guardrails.arm_totals(totals, exp.id)
        rows.append(ExperimentRow(exp, guardrails.arm_report("control", control, versions["control"]),
                                  guardrails.arm_report("treatment", treatment, versions["treatment"]),
                                  guardrails.compare(control, treatment),
                                  guardrails.check(exp, control, treatment) if exp.running else None))
    return rows


async def gather(svc: Services) -> tuple[list[ModelRow], list[ExperimentRow]]:
    """The whole page's data: one read of the KPI totals, one of the experiments."""
    totals = await experiments.kpi_totals(svc)
    listing = await experiments.records(svc)
    return model_rows(svc, totals), experiment_rows(listing, totals)
