"""Loading model versions from the registry: one version (`load_version`) or the ACTIVE set (`load_active`).

Serving calls `load_active` at start and on every ACTIVE switch; evaluation and tests load the same way, so what
they measure is what serves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantry.models import variants
from pantry.models.next_best_action import NextBestAction
from pantry.models.recommender import Recommender
from pantry.models.registry import active_version, check_name, verify
from pantry.models.substitutions import Substitutions
from pantry.scoring import MODEL_NAMES, ModelError

log = logging.getLogger("pantry.models")


def load_version(models_dir: Path, name: str, version: str, recommender_cache: int | None = None):
    """Verify every file's sha256 against the manifest, then build the scorer (raises ModelError).
    `recommender_cache`: how many customers' scored candidates the recommender keeps (None: the default)."""
    check_name(name)
    directory = Path(models_dir) / name / version
    if not directory.is_dir():
        raise ModelError(f"{name} has no version {version!r} under {models_dir}")
    manifest = verify(directory)
    try:
        if variants.variant_of(manifest):  # a baseline (popularity, random, rule, ...): pantry/models/variants.py
            return variants.build(name, directory, manifest, recommender_cache)
        if name == "recommender":
            return Recommender(directory, manifest, cache_size=recommender_cache)
        if name == "substitutions":
            return Substitutions(directory, manifest)
        return NextBestAction(directory, manifest)
    except ModelError:
        raise
    except Exception as exc:  # a corrupt array or graph must surface as ModelError, not crash serving
        raise ModelError(f"{name} {version}: cannot load: {exc}") from exc


@dataclass(frozen=True)
class ModelSet:
    """One scorer per model name (None: no ACTIVE version, or none loaded yet)."""

    recommender: Any = None
    substitutions: Any = None
    next_best_action: Any = None

    def versions(self) -> dict[str, str | None]:
        return {name: getattr(getattr(self, name), "version", None) for name in MODEL_NAMES}

    @property
    def complete(self) -> bool:
        return all(getattr(self, name) is not None for name in MODEL_NAMES)


def load_active(models_dir: Path, current: ModelSet | None = None,
                recommender_cache: int | None = None) -> tuple[ModelSet, dict[str, str]]:
    """The ACTIVE version of each model, loaded one by one: a model that fails to load keeps its previous version
    (or stays None) without taking the others down. An unchanged version keeps its instance (and caches); a new
    recommender is warmed before it is returned. Returns the set and {model: error} for the failures."""
    current = current or ModelSet()
    loaded: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in MODEL_NAMES:
        old = getattr(current, name)
        try:
            version = active_version(Path(models_dir), name)
            if version is None:
                loaded[name] = None
            elif old is not None and getattr(old, "version", None) == version:
                loaded[name] = old
            else:
                loaded[name] = load_version(models_dir, name, version, recommender_cache=recommender_cache)
                if name == "recommender":
                    started = time.perf_counter()
                    n = loaded[name].warm()  # before it serves: a switch never answers from a cold cache
                    log.info("recommender %s: %d customers ranked in %.1f s", version, n,
                             time.perf_counter() - started)
        except Exception as exc:  # a corrupt or half-written artifact must not take the service down
            errors[name] = f"{type(exc).__name__}: {exc}"
            loaded[name] = old
    return ModelSet(**loaded), errors
