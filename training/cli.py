"""`pantry train`, `pantry models list|activate|rollback`, `pantry evaluate` (heavy imports inside the commands)."""

from __future__ import annotations

import click

from pantry.scoring import MODEL_NAMES
from pantry.settings import get_settings


def _until(text: str | None):
    from training.data import latest_until, parse_until

    settings = get_settings()
    if text is None:
        return latest_until(settings)
    try:
        return parse_until(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from exc


@click.command()
@click.option("--until", "until_text", default=None,
              help="Train on purchases (the data set's and the event archive's) strictly before this date "
                   "(YYYY-MM-DD); default: the day after the last one.")
@click.option("--activate", is_flag=True, help="Make the new versions ACTIVE (default: only when none is).")
@click.option("--force", is_flag=True, help="Retrain even if the ACTIVE model already has this cut and data.")
@click.option("--only", type=click.Choice(MODEL_NAMES), multiple=True, help="Train only these models.")
@click.option("--no-push", is_flag=True, help="Do not push customer embeddings to the online store.")
def train(until_text: str | None, activate: bool, force: bool, only: tuple[str, ...], no_push: bool) -> None:
    """Train the recommender, substitution and next-best-action models, export to ONNX, register them."""
    import time

    from pantry.scoring import ModelError
    from training.pipeline import train as run_train

    settings = get_settings()
    try:
        until = _until(until_text)
        start = time.perf_counter()
        click.echo(f"training on purchases before {until.isoformat()}")
        result = run_train(settings, until, only=only or MODEL_NAMES, activate=activate, force=force, push=not no_push)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    if not result.versions:
        click.echo("nothing to do: every ACTIVE model is up to date")
        return
    summary = ", ".join(f"{n} {v}" for n, v in result.versions.items())
    click.echo(f"done in {time.perf_counter() - start:.1f} s: {summary}")


@click.group()
def models() -> None:
    """The model registry under artifacts/models/."""


@models.command("list")
def models_list() -> None:
    """Every version of every model; * marks the ACTIVE one."""
    from pantry.models import registry

    models_dir = get_settings().models_dir
    for name in MODEL_NAMES:
        active = registry.active_version(models_dir, name)
        found = registry.versions(models_dir, name)
        click.echo(f"{name}:" + ("" if found else " (no versions)"))
        for v in found:
            try:
                m = registry.read_manifest(models_dir / name / v)
                detail = f"until {m.trained_until[:10]}  " + "  ".join(
                    f"{k}={val:.4g}" for k, val in m.metrics.items() if isinstance(val, float)
                )
            except Exception as exc:
                detail = f"(unreadable: {exc})"
            click.echo(f"  {'*' if v == active else ' '} {v}  {detail}")


def _audit(settings, action: str, name: str, before: str | None, after: str) -> None:
    from pantry.audit_cli import record

    if not record(settings, action, f"model:{name}", before=before, after=after):
        click.echo(f"warning: redis not reachable, {action} of {name} is not in the audit log", err=True)


@models.command("activate")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.argument("version")
@click.option("--no-push", is_flag=True, help="Do not push the recommender's embeddings online.")
def models_activate(name: str, version: str, no_push: bool) -> None:
    """Make VERSION of NAME the served one (sha256 checked first)."""
    from pantry.models import registry
    from pantry.scoring import ModelError
    from training.pipeline import push_embeddings

    settings = get_settings()
    before = registry.active_version(settings.models_dir, name)
    try:
        registry.activate(settings.models_dir, name, version)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: ACTIVE -> {version}")
    _audit(settings, "model.activate", name, before, version)
    if name == "recommender" and not no_push:
        push_embeddings(settings, settings.models_dir / name / version, click.echo)


@models.command("rollback")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.option("--no-push", is_flag=True, help="Do not push the recommender's embeddings online.")
def models_rollback(name: str, no_push: bool) -> None:
    """Switch NAME back to the version that was ACTIVE before the current one."""
    from pantry.models import registry
    from pantry.scoring import ModelError
    from training.pipeline import push_embeddings

    settings = get_settings()
    before = registry.active_version(settings.models_dir, name)
    try:
        version = registry.rollback(settings.models_dir, name)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{name}: rolled back, ACTIVE -> {version}")
    _audit(settings, "model.rollback", name, before, version)
    if name == "recommender" and not no_push:
        push_embeddings(settings, settings.models_dir / name / version, click.echo)


@models.command("baseline")
@click.argument("name", type=click.Choice(MODEL_NAMES))
@click.option("--variant", required=True,
              help="recommender: popularity | random | failing; next_best_action: rule (pantry/models/variants.py).")
def models_baseline(name: str, variant: str) -> None:
    """Publish a baseline version `<active>-<variant>` of NAME from the ACTIVE version's files (not activated):
    a treatment or a reference for experiments."""
    from pantry.models.variants import publish_baseline
    from pantry.scoring import ModelError

    settings = get_settings()
    try:
        version = publish_baseline(settings.models_dir, name, variant)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(version)


@click.command()
@click.option("--out", "out_path", default=None, help="Report path (default docs/MODEL_REPORT.md).")
@click.option("--only", type=click.Choice(MODEL_NAMES), multiple=True, help="Evaluate only these models.")
def evaluate(out_path: str | None, only: tuple[str, ...]) -> None:
    """Run the evaluation protocols on the loaded data (baselines recomputed) and write docs/MODEL_REPORT.md."""
    from pathlib import Path

    from pantry.settings import ROOT
    from training.evaluate import run_all

    settings = get_settings()
    out = Path(out_path) if out_path else ROOT / "docs" / "MODEL_REPORT.md"
    try:
        run_all(settings, out, only=only or MODEL_NAMES)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report written to {out}")
