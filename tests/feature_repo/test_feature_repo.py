"""The Feast repo is a normal one: the plain `feast` CLI and SDK see every entity, view and service of the design."""

import subprocess
import threading

import msgspec
import yaml

from pantry.featurestore import repo
from pantry.settings import subprocess_env

VIEWS = {"customer_session", "customer_activity", "customer_repertoire", "customer_embedding", "store_traffic",
         "store_product", "product", "campaign_coupon", "customer_preferences",
         "customer_substitution_feedback", "product_substitution_feedback"}
SERVICES = {"recommendations_v1", "substitutions_v1", "substitutions_v2", "next_best_action_v1"}


def test_registry_has_every_view_and_service(feast_applied):
    schemas = repo.layout(feast_applied).views
    assert set(schemas) == VIEWS
    assert schemas["store_product"].join_keys == ("store_id", "product_id")
    assert schemas["customer_session"].ttl_s == 3600
    assert set(repo.registry(feast_applied)[1]) == SERVICES


def test_plain_feast_cli_works_on_the_repo(feast_applied):
    env = subprocess_env(feast_applied)
    listed = subprocess.run(repo.feast_command(feast_applied, "feature-views", "list"),
                            env=env, capture_output=True, text=True, check=True).stdout
    for view in VIEWS:
        assert view in listed
    plan = subprocess.run(repo.feast_command(feast_applied, "plan"), env=env, capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert "No changes to registry" in plan.stdout or "Created" not in plan.stdout


def test_feature_store_yaml_is_never_seen_half_written_by_another_worker(feast_applied, tmp_path):
    """The workers of one flow write the yaml at the same time as others read it (a CI failure: Feast read an
    empty file); a reader sees the whole file or no file, never a part."""
    settings = msgspec.structs.replace(feast_applied, data_dir=tmp_path / "data")
    seen: list[object] = []
    stop = threading.Event()

    def read() -> None:
        path = settings.data_dir / "feature_store.yaml"
        while not stop.is_set():
            if path.exists():
                seen.append(yaml.safe_load(path.read_text()))

    def write(redis_url: str) -> None:
        for _ in range(200):
            repo.feature_store_yaml(msgspec.structs.replace(settings, redis_url=redis_url))

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(f"redis://localhost:{port}",)) for port in (6390, 6391)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert seen and all(isinstance(config, dict) and config["project"] == settings.project for config in seen)
    assert not [p.name for p in settings.data_dir.iterdir() if p.name != "feature_store.yaml"]
