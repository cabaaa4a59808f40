"""The training CLI: clear errors (never a traceback), idempotent train, list/activate/rollback."""

from __future__ import annotations

from click.testing import CliRunner

from pantry.models import registry
from training.cli import models, train


def test_bad_input_gives_clear_errors(trained) -> None:
    runner = CliRunner()
    bad = runner.invoke(train, ["--until", "2017-13-45"])
    assert bad.exit_code == 2 and "not a date" in bad.output
    missing = runner.invoke(models, ["activate", "recommender", "no-such-version"])
    assert missing.exit_code == 1 and "has no version" in missing.output
    unknown = runner.invoke(models, ["rollback", "nonsense"])
    assert unknown.exit_code == 2


def test_train_is_idempotent_and_models_list_marks_active(trained) -> None:
    from training_consts import SLICE_UNTIL

    runner = CliRunner()
    again = runner.invoke(train, ["--until", SLICE_UNTIL.date().isoformat(), "--no-push"])
    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.output
    listing = runner.invoke(models, ["list"])
    active = registry.active_version(trained.models_dir, "next_best_action")
    assert listing.exit_code == 0 and f"* {active}" in listing.output


def test_activate_on_the_command_line_is_in_the_audit_log(trained) -> None:
    from pantry import audit
    from pantry.audit_cli import cli_actor
    from pantry.redis_server import sync_client

    active = registry.active_version(trained.models_dir, "next_best_action")
    done = CliRunner().invoke(models, ["activate", "next_best_action", active, "--no-push"])
    assert done.exit_code == 0, done.output
    _, last = audit.read_all(sync_client(trained))[-1]
    assert (last.actor, last.action, last.target) == (cli_actor(), "model.activate", "model:next_best_action")
    assert last.before == last.after == active and last.actor.startswith("cli:")
