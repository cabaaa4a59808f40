"""The model registry on disk.

artifacts/models/<name>/<version>/  model.onnx, lookup tables (.npy/.parquet), manifest.json (sha256 of every file)
artifacts/models/<name>/ACTIVE      the served version (replaced atomically: write a temp file, os.replace)
artifacts/models/<name>/HISTORY     JSON list of activated versions, oldest first (rollback pops the last one)
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from pantry.scoring import MODEL_NAMES, ModelError

MANIFEST = "manifest.json"


class Manifest(msgspec.Struct, kw_only=True):
    name: str
    version: str
    trained_until: str
    data_digest: str
    feature_service: str
    created_at: str
    files: dict[str, str]  # file name -> sha256
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    metrics: dict[str, Any] = msgspec.field(default_factory=dict)
    timings_s: dict[str, float] = msgspec.field(default_factory=dict)


_manifest_decoder = msgspec.json.Decoder(Manifest)
_history_decoder = msgspec.json.Decoder(list[str])


def check_name(name: str) -> str:
    if name not in MODEL_NAMES:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(MODEL_NAMES)}")
    return name


def new_version(data_digest: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S}-{data_digest[:8]}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def staging_dir(models_dir: Path, name: str, version: str) -> Path:
    path = models_dir / check_name(name) / f".staging-{version}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def publish(staging: Path, manifest: Manifest) -> Path:
    """Hash every file in `staging`, write the manifest, and move the directory to its final version path."""
    manifest.files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
    (staging / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    final = staging.parent / manifest.version
    if final.exists():
        raise ModelError(f"version {manifest.version} of {manifest.name} already exists")
    os.replace(staging, final)
    return final


def read_manifest(version_dir: Path) -> Manifest:
    path = version_dir / MANIFEST
    try:
        return _manifest_decoder.decode(path.read_bytes())
    except FileNotFoundError as exc:
        raise ModelError(f"no manifest at {path}") from exc
    except msgspec.DecodeError as exc:
        raise ModelError(f"corrupt manifest {path}: {exc}") from exc


def verify(version_dir: Path) -> Manifest:
    """The manifest, after checking every listed file exists and matches its sha256."""
    manifest = read_manifest(version_dir)
    for file, expected in manifest.files.items():
        path = version_dir / file
        if not path.exists():
            raise ModelError(f"{manifest.name} {manifest.version}: missing file {file}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(f"{manifest.name} {manifest.version}: sha256 mismatch for {file}")
    return manifest


def versions(models_dir: Path, name: str) -> list[str]:
    root = models_dir / check_name(name)
    if not root.exists():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists()
    )


def active_version(models_dir: Path, name: str) -> str | None:
    path = models_dir / check_name(name) / "ACTIVE"
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return text or None


def history(models_dir: Path, name: str) -> list[str]:
    path = models_dir / check_name(name) / "HISTORY"
    try:
        return _history_decoder.decode(path.read_bytes())
    except FileNotFoundError:
        return []


def activate(models_dir: Path, name: str, version: str) -> None:
    """Point ACTIVE at `version` (atomically) and remember it for rollback."""
    if version not in versions(models_dir, name):
        raise ModelError(f"{name} has no version {version!r} (have: {', '.join(versions(models_dir, name)) or 'none'})")
    verify(models_dir / name / version)
    past = history(models_dir, name)
    if not past or past[-1] != version:
        past.append(version)
    _atomic_write(models_dir / name / "HISTORY", msgspec.json.encode(past))
    _atomic_write(models_dir / name / "ACTIVE", (version + "\n").encode())


def rollback(models_dir: Path, name: str) -> str:
    """Switch ACTIVE back to the version activated before the current one; returns it."""
    past = history(models_dir, name)
    current = active_version(models_dir, name)
    if current is not None and past and past[-1] == current:
        past = past[:-1]
    while past and past[-1] not in versions(models_dir, name):
        past = past[:-1]  # a deleted version cannot be rolled back to
    if not past:
        raise ModelError(f"{name}: no previous version to roll back to")
    previous = past[-1]
    verify(models_dir / name / previous)
    _atomic_write(models_dir / name / "HISTORY", msgspec.json.encode(past))
    _atomic_write(models_dir / name / "ACTIVE", (previous + "\n").encode())
    return previous
