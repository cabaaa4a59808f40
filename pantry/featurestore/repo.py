"""The Feast repo (feature_repo/) as pantry's settings see it: a feature_store.yaml per settings, `feast apply`,
the SDK's FeatureStore, and the layout and feature services read from the registry.

`feature_repo/feature_store.yaml` holds the defaults of `make demo` for the plain `feast` CLI. For any other
settings (REDIS_URL, PANTRY_DATA_DIR — tests use their own) pantry writes `<data_dir>/feature_store.yaml`
with absolute paths and points `feast -f` at it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import yaml

from pantry.featurestore import feast_sdk
from pantry.featurestore.layout import OnlineLayout, schemas_from_feast
from pantry.settings import Settings, subprocess_env

# {service: [(view, [features])]}, from the registry
FeatureServices = dict[str, list[tuple[str, list[str]]]]


def feature_store_yaml(settings: Settings) -> Path:
    """Write the feature_store.yaml for these settings and return its path."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "feature_store.yaml"
    config = {
        "project": settings.project,
        "provider": "local",
        "registry": str(settings.registry_path),
        "online_store": {"type": "redis", "connection_string": settings.feast_connection_string(),
                         "redis_type": "redis_cluster" if settings.redis_cluster else "redis"},
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 3,
    }
    text = yaml.safe_dump(config, sort_keys=False)
    if not path.exists() or path.read_text() != text:
        # Written aside and renamed over: the workers of one flow call this at the same time, and a plain
        # write_text truncates first, so Feast in another worker could read an empty file (CI, 2026-12-03).
        aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        aside.write_text(text)
        os.replace(aside, path)
    return path


def feast_command(settings: Settings, *args: str, plain: bool = True) -> list[str]:
    """The `feast` CLI on feature_repo/ with these settings: the plain console script, or (plain=False) the same CLI
    started through pantry.featurestore.feast_sdk (half the start-up time)."""
    feast = [str(Path(sys.executable).with_name("feast"))] if plain else [sys.executable, "-m", feast_sdk.__name__]
    return [*feast, "-c", str(settings.feature_repo), "-f", str(feature_store_yaml(settings)), *args]


def apply(settings: Settings, quiet: bool = True) -> None:
    """`feast apply` on feature_repo/ (in a subprocess: Feast imports the repo's modules by path)."""
    result = subprocess.run(
        feast_command(settings, "apply", plain=False), env=subprocess_env(settings), capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"feast apply failed:\n{result.stdout}\n{result.stderr}")
    if not quiet:
        print(result.stdout.strip())


def store(settings: Settings):  # -> feast.FeatureStore (imported lazily: it is slow to import)
    feast = feast_sdk.import_feast()
    return feast.FeatureStore(repo_path=str(settings.feature_repo), fs_yaml_file=feature_store_yaml(settings))


def layout(settings: Settings) -> OnlineLayout:
    """Names, join keys, TTLs and dtypes of every feature view, from the Feast registry."""
    return OnlineLayout(settings.project, schemas_from_feast(store(settings).list_feature_views()))


def registry(settings: Settings) -> tuple[OnlineLayout, FeatureServices]:
    """The layout and the feature services, from one read of the registry."""
    fs = store(settings)
    services = {
        svc.name: [(proj.name, [f.name for f in proj.features]) for proj in svc.feature_view_projections]
        for svc in fs.list_feature_services()
    }
    return OnlineLayout(settings.project, schemas_from_feast(fs.list_feature_views())), services
