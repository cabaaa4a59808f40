"""The Feast repo is a normal one: the plain `feast` CLI and SDK see every entity, view and service of the design."""

import subprocess

from pantry.featurestore import repo
from pantry.settings import subprocess_env

VIEWS = {"customer_session", "customer_activity", "customer_repertoire", "customer_embedding", "store_traffic",
         "store_product", "product", "campaign_coupon"}
SERVICES = {"recommendations_v1", "substitutions_v1", "next_best_action_v1"}


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
