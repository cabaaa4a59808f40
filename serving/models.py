"""The served models, swapped atomically when an ACTIVE file of the registry changes.

Every worker process polls the ACTIVE files' (mtime, content) about once a second; on a change it loads the new
set in a thread (`pantry.models.load_active`, which verifies each file's sha256) and then replaces one attribute,
so a request sees either the old set or the new one, never a mix, and none fails during the switch. A model that
fails to load is logged and its previous version keeps serving.

Erased customers (pantry.erasure): every worker polls pantry:customers:erased every 0.5 s and hands the ids to its
scorers (`hidden`), which then treat those customers as unknown to every version: a running worker stops using an
erased customer's factors, history and cached ranking within ~0.5 s of the erasure.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from pantry.keys import ERASED_CUSTOMERS
from pantry.models import ModelSet, load_active
from pantry.scoring import MODEL_NAMES

log = logging.getLogger("pantry.serving.models")


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

    def _hide_erased(self, models: ModelSet) -> None:
        for name in MODEL_NAMES:
            scorer = getattr(models, name)
            if scorer is not None and scorer.hidden is not self.erased:
                scorer.hidden = self.erased

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
