"""The served models, swapped atomically when an ACTIVE file of the registry changes.

Every worker process polls the ACTIVE files' (mtime, content) about once a second; on a change it loads the new
set in a thread (`pantry.models.load_active`, which verifies each file's sha256) and then replaces one attribute,
so a request sees either the old set or the new one, never a mix, and none fails during the switch. A model that
fails to load is logged and its previous version keeps serving.

Erased customers (pantry.erasure): every worker polls pantry:customers:erased every 0.5 s and hands the ids to its
scorers (`hidden`), which then treat those customers as unknown to every version: a running worker stops using an
erased customer's factors, history and cached ranking within ~0.5 s of the erasure.

Experiments (pantry/experiments.py): every worker re-reads the running experiments about once a second
(`watch_experiments`) and loads each treatment version in a thread (`load_version`, sha256-checked, warmed), like
ACTIVE. `choose` gives an answer its scorer: the control's (the ACTIVE set) or the treatment's, by the customer's
stable arm. A treatment that cannot be loaded is retried every TREATMENT_RETRY_S; meanwhile its customers get the
control's answer with the `model_unavailable` fallback, recorded under the treatment arm, so the fallback-rate
guardrail stops the experiment (pantry/guardrails.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantry import experiments
from pantry.experiments import Experiment
from pantry.keys import ERASED_CUSTOMERS, EXPERIMENTS, EXPERIMENTS_RUNNING
from pantry.models import ModelSet, load_active, load_version
from pantry.scoring import MODEL_NAMES

log = logging.getLogger("pantry.serving.models")
TREATMENT_RETRY_S = 30.0  # a treatment version that failed to load is tried again after this long


@dataclass(frozen=True)
class Running:
    """A running experiment of one model in this worker: its record and its loaded treatment (None: not loaded)."""

    experiment: Experiment
    treatment: Any = None
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """The scorer that answers one request, and the experiment arm that chose it ("" outside experiments).
    `unavailable`: the customer's arm is an unloadable treatment; the control's scorer answers, with a fallback."""

    scorer: Any
    experiment_id: str = ""
    arm: str = ""
    unavailable: bool = False


def active_signature(models_dir: Path) -> tuple:
    """What the poller compares: each ACTIVE file's mtime and content (content alone misses nothing we need)."""
    sig = []
    for name in MODEL_NAMES:
        path = models_dir / name / "ACTIVE"
        try:
            sig.append((name, path.stat().st_mtime_ns, path.read_text().strip()))
        except OSError:
            sig.append((name, None, None))
    return tuple(sig)


class ModelHolder:
    """One per worker: `current` is swapped in one assignment."""

    def __init__(self, models_dir: Path, recommender_cache: int | None = None):
        self.models_dir = models_dir
        self.recommender_cache = recommender_cache
        self.current = ModelSet()
        self.signature: tuple | None = None
        self.last_error: str | None = None
        self.reloads = 0
        self.erased: frozenset[int] = frozenset()
        self.running: dict[str, Running] = {}  # model -> its running experiment (swapped in one assignment)
        self._treatments: dict[tuple[str, str], Any] = {}  # (model, version) -> loaded treatment scorer
        self._failed: dict[tuple[str, str], tuple[float, str]] = {}  # (model, version) -> (when, error)

    def _hide_erased(self, models: ModelSet) -> None:
        scorers = [getattr(models, name) for name in MODEL_NAMES] + [r.treatment for r in self.running.values()]
        for scorer in scorers:
            if scorer is not None and scorer.hidden is not self.erased:
                scorer.hidden = self.erased

    # ---- experiments ----------------------------------------------------------------------------------------

    def choose(self, name: str, customer_id: int) -> Choice:
        control = getattr(self.current, name)
        running = self.running.get(name)
        if running is None:
            return Choice(control)
        arm = experiments.arm_of(running.experiment, customer_id)
        if arm == "control":
            return Choice(control, running.experiment.id, arm)
        if running.treatment is None:
            return Choice(control, running.experiment.id, arm, unavailable=True)
        return Choice(running.treatment, running.experiment.id, arm)

    def _needs_load(self, exps: list[Experiment], now: float) -> bool:
        for e in exps:
            key = (e.model, e.treatment)
            failed = self._failed.get(key)
            if key not in self._treatments and (failed is None or now - failed[0] >= TREATMENT_RETRY_S):
                return True
        return False

    def set_experiments(self, exps: list[Experiment], now: float | None = None) -> None:
        """Make `exps` (the running experiments) this worker's, loading treatments not loaded yet (blocking: call
        in a thread when `_needs_load`)."""
        now = time.time() if now is None else now
        wanted = {(e.model, e.treatment) for e in exps}
        for key in wanted:
            failed = self._failed.get(key)
            if key in self._treatments or (failed is not None and now - failed[0] < TREATMENT_RETRY_S):
                continue
            try:
                scorer = load_version(self.models_dir, key[0], key[1], recommender_cache=self.recommender_cache)
                if hasattr(scorer, "warm"):
                    scorer.warm()
                scorer.hidden = self.erased
                self._treatments[key] = scorer
                self._failed.pop(key, None)
                log.info("experiment treatment %s %s loaded", *key)
            except Exception as exc:  # answered by the control with a fallback; the guardrail stops it
                self._failed[key] = (now, f"{type(exc).__name__}: {exc}")
                log.warning("experiment treatment %s %s not loaded: %s", key[0], key[1], exc)
        self._treatments = {k: v for k, v in self._treatments.items() if k in wanted}
        self._failed = {k: v for k, v in self._failed.items() if k in wanted}
        self.running = {e.model: Running(e, self._treatments.get((e.model, e.treatment)),
                                         (self._failed.get((e.model, e.treatment)) or (0, None))[1]) for e in exps}

    def end_experiment(self, model: str) -> None:
        """This worker stops splitting `model` at once (the others within a poll)."""
        self.running = {m: r for m, r in self.running.items() if m != model}

    async def refresh_experiments(self, redis, store) -> None:
        ids = sorted(set((await store.call(lambda: redis.hgetall(EXPERIMENTS_RUNNING))).values()))
        raws = await store.call(lambda: redis.hmget(EXPERIMENTS, ids)) if ids else []
        exps = [e for e in (experiments.decode(r) for r in raws if r) if e.running]
        if self._needs_load(exps, time.time()):
            await asyncio.to_thread(self.set_experiments, exps)
        else:
            self.set_experiments(exps)

    async def watch_experiments(self, redis, store, interval_s: float = 1.0, on_change=None) -> None:
        """Poll the running experiments; never dies (Redis down: the last known split stays)."""
        while True:
            try:
                await self.refresh_experiments(redis, store)
                if on_change is not None:
                    on_change(self.running)
            except Exception:
                log.debug("experiments not refreshed", exc_info=True)
            await asyncio.sleep(interval_s)

    def set_erased(self, ids: frozenset[int]) -> None:
        self.erased = ids
        self._hide_erased(self.current)

    def load_now(self) -> None:
        signature = active_signature(self.models_dir)
        models, errors = load_active(self.models_dir, self.current, self.recommender_cache)
        for name, error in errors.items():
            log.warning("model %s not (re)loaded, keeping %s: %s", name, getattr(models, name) and
                        getattr(models, name).version, error)
        self.last_error = "; ".join(f"{n}: {e}" for n, e in errors.items()) or None
        self._hide_erased(models)
        self.current = models  # one assignment: a request sees the old set or the new one
        self.signature = signature
        self.reloads += 1
        log.info("models: %s", models.versions())

    async def watch_erased(self, redis, store, interval_s: float = 0.5) -> None:
        """Poll the erased set (its size, then its members when the size changed); never dies."""
        seen = -1
        while True:
            try:
                n = await store.call(lambda: redis.scard(ERASED_CUSTOMERS))
                if n != seen:
                    members = await store.call(lambda: redis.smembers(ERASED_CUSTOMERS))
                    self.set_erased(frozenset(int(m) for m in members))
                    seen = n
                else:
                    self._hide_erased(self.current)  # a version loaded since
            except Exception:  # Redis down (StoreUnavailable) or a bug: keep the last known set
                log.debug("erased customers not refreshed", exc_info=True)
            await asyncio.sleep(interval_s)

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if active_signature(self.models_dir) != self.signature:
                    await asyncio.to_thread(self.load_now)
            except Exception:  # the watcher must never die
                log.exception("model watcher")
