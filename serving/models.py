"""The served models: loaded from training's registry, swapped atomically when an ACTIVE file changes.

Every worker process polls the ACTIVE files' (mtime, content) about once a second; on a change it loads the new
set in a thread (training's loaders verify each file's sha256) and then replaces one attribute, so a request sees
either the old set or the new one, never a mix, and none fails during the switch. A set that fails to load is
logged and the old one keeps serving.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantry.scoring import MODEL_NAMES

log = logging.getLogger("pantry.serving.models")


@dataclass(frozen=True)
class ModelSet:
    recommender: Any = None
    substitutions: Any = None
    next_best_action: Any = None

    def versions(self) -> dict[str, str | None]:
        return {name: getattr(getattr(self, name), "version", None) for name in MODEL_NAMES}

    @property
    def complete(self) -> bool:
        return all(getattr(self, name) is not None for name in MODEL_NAMES)


def _scorers():
    try:
        return importlib.import_module("training.scorers")
    except ModuleNotFoundError as exc:
        if exc.name in ("training.scorers", "training"):
            return None
        raise


def load_models(models_dir: Path, current: ModelSet | None = None,
                recommender_cache: int | None = None) -> tuple[ModelSet, dict[str, str]]:
    """The ACTIVE version of each model, loaded one by one: a model that fails to load keeps its previous version
    (or stays None) without taking the others down. Returns the set and {model: error} for the failures."""
    scorers = _scorers()
    current = current or ModelSet()
    if scorers is None:
        return current, {}
    from training import registry

    loaded: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in MODEL_NAMES:
        old = getattr(current, name)
        try:
            version = registry.active_version(models_dir, name)
            if version is None:
                loaded[name] = None
            elif old is not None and getattr(old, "version", None) == version:
                loaded[name] = old  # unchanged: keep the instance
            else:
                # verifies every sha256
                loaded[name] = scorers.load_version(models_dir, name, version, recommender_cache=recommender_cache)
                if name == "recommender":
                    started = time.perf_counter()
                    n = loaded[name].warm()  # before it serves: a switch never answers from a cold cache
                    log.info("recommender %s: %d customers ranked in %.1f s", version, n,
                             time.perf_counter() - started)
        except Exception as exc:  # a corrupt or half-written artifact must not take the service down
            errors[name] = f"{type(exc).__name__}: {exc}"
            loaded[name] = old
    return ModelSet(**loaded), errors


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

    def load_now(self) -> None:
        signature = active_signature(self.models_dir)
        models, errors = load_models(self.models_dir, self.current, self.recommender_cache)
        for name, error in errors.items():
            log.warning("model %s not (re)loaded, keeping %s: %s", name, getattr(models, name) and
                        getattr(models, name).version, error)
        self.last_error = "; ".join(f"{n}: {e}" for n, e in errors.items()) or None
        self.current = models  # one assignment: a request sees the old set or the new one
        self.signature = signature
        self.reloads += 1
        log.info("models: %s", models.versions())

    async def watch(self, interval_s: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if active_signature(self.models_dir) != self.signature:
                    await asyncio.to_thread(self.load_now)
            except Exception:  # the watcher must never die
                log.exception("model watcher")
