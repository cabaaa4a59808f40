"""Registry: publish with sha256, activate, rollback, tamper detection, idempotent retrain, ACTIVE untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from pantry.models import load_active, load_version, registry
from pantry.scoring import ModelError


def _publish(models_dir: Path, version: str, payload: bytes) -> None:
    staging = registry.staging_dir(models_dir, "recommender", version)
    (staging / "model.onnx").write_bytes(payload)
    (staging / "table.npy").write_bytes(payload * 2)
    registry.publish(staging, registry.Manifest(name="recommender", version=version, trained_until="t",
                                                data_digest="d", feature_service="recommendations_v1",
                                                created_at="c", files={}))


def test_activate_and_rollback(tmp_path: Path) -> None:
    for v in ("v1", "v2", "v3"):
        _publish(tmp_path, v, v.encode())
    assert registry.versions(tmp_path, "recommender") == ["v1", "v2", "v3"]
    assert registry.active_version(tmp_path, "recommender") is None
    with pytest.raises(ModelError):
        registry.rollback(tmp_path, "recommender")
    registry.activate(tmp_path, "recommender", "v1")
    registry.activate(tmp_path, "recommender", "v3")
    assert registry.active_version(tmp_path, "recommender") == "v3"
    assert registry.rollback(tmp_path, "recommender") == "v1"
    assert registry.active_version(tmp_path, "recommender") == "v1"
    with pytest.raises(ModelError, match="no previous"):
        registry.rollback(tmp_path, "recommender")
    with pytest.raises(ModelError, match="no version"):
        registry.activate(tmp_path, "recommender", "v9")
    assert not list((tmp_path / "recommender").glob(".*tmp"))  # atomic writes left no temp files


def test_sha256_mismatch_is_refused(tmp_path: Path) -> None:
    _publish(tmp_path, "v1", b"good")
    (tmp_path / "recommender" / "v1" / "table.npy").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        registry.verify(tmp_path / "recommender" / "v1")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        registry.activate(tmp_path, "recommender", "v1")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_version(tmp_path, "recommender", "v1")


def test_trained_registry_loads_and_retrain_keeps_active(trained) -> None:
    from training_consts import SLICE_UNTIL, TINY_ALS, TRAINED

    from pantry.models.recommender import Recommender
    from training.pipeline import train

    models_dir = trained.models_dir
    active, errors = load_active(models_dir)
    assert errors == {} and active.complete
    assert isinstance(active.recommender, Recommender)
    before = registry.active_version(models_dir, "recommender")

    # same cut, same data: nothing to do
    again = train(trained, SLICE_UNTIL, only=TRAINED, als_params=TINY_ALS, echo=lambda _m: None)
    assert again.versions == {} and again.skipped == list(TRAINED)

    # a forced retrain registers a new version but does not switch ACTIVE unless asked
    import time

    time.sleep(1.1)  # versions are per second
    forced = train(trained, SLICE_UNTIL, only=("recommender",), force=True, als_params=TINY_ALS,
                   echo=lambda _m: None, push=False)
    new = forced.versions["recommender"]
    assert new != before and registry.active_version(models_dir, "recommender") == before
    registry.activate(models_dir, "recommender", new)
    assert registry.rollback(models_dir, "recommender") == before


def test_load_active_keeps_the_previous_version_of_a_model_that_fails_to_load(trained, tmp_path: Path) -> None:
    """Serving's reload: a new ACTIVE version that cannot be loaded (a file corrupted after activation) leaves that
    model on its previous version and the others untouched (same instances, caches kept); the recommender comes
    back warmed."""
    import shutil

    import msgspec

    models_dir = tmp_path / "models"
    shutil.copytree(trained.models_dir, models_dir)
    first, errors = load_active(models_dir)
    assert errors == {} and first.complete
    assert first.recommender._ranked_known.cache_info().currsize > 0  # warmed before it is returned

    old = registry.active_version(models_dir, "substitutions")
    staging = registry.staging_dir(models_dir, "substitutions", "v-broken")
    for path in (models_dir / "substitutions" / old).iterdir():
        if path.name != registry.MANIFEST:
            shutil.copy(path, staging / path.name)
    manifest = msgspec.structs.replace(registry.read_manifest(models_dir / "substitutions" / old), version="v-broken")
    registry.publish(staging, manifest)
    registry.activate(models_dir, "substitutions", "v-broken")
    (models_dir / "substitutions" / "v-broken" / "model.onnx").write_bytes(b"not a graph")

    second, errors = load_active(models_dir, current=first)
    assert list(errors) == ["substitutions"] and "sha256 mismatch" in errors["substitutions"]
    assert second.substitutions is first.substitutions and second.substitutions.version == old
    assert second.recommender is first.recommender and second.next_best_action is first.next_best_action
    fresh, errors = load_active(models_dir)  # nothing to fall back to: that model is absent, the others load
    assert list(errors) == ["substitutions"] and fresh.substitutions is None and not fresh.complete
    assert fresh.versions()["recommender"] == first.recommender.version
