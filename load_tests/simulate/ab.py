"""Experiments driven by the shopper simulator, against a running pantry (`make demo`):

    python -m load_tests.simulate.ab compare --from 2017-11-01 --to 2017-12-01 [--concurrency 16] [--out ab.json]
    python -m load_tests.simulate.ab drill --variant random --from 2017-12-01 --to 2017-12-08
    python -m load_tests.simulate.ab versus --model substitutions --treatment VERSION --from 2017-12-01 --to 2018-01-01

`compare`, the trained models against simple baselines:
For each pair (recommender vs its popularity-only version, next-best-action vs its rule version): the baseline is
published (`pantry models baseline`) and made ACTIVE through /admin/models, so it is the control, and an experiment
gives the trained version (the treatment) to half the customers. The baseline is the control because the CTR-drop
guardrail protects the control's customers from a worse treatment: with the trained model as control, a clearly
worse baseline would be stopped within minutes and the month would not be measured. Then `pantry simulate` replays
the window, the reports are read once the live flow has counted the outcomes, the experiments are stopped and the
trained versions are ACTIVE again. Prints each report's arms and differences (treatment - control, 95% interval,
p-value) and writes them to --out.

`versus`, the ACTIVE version (control) against another version of the same model (treatment) on half the
customers: e.g. a retrain that learned from the previous window's feedback against the version it would replace.

`drill`, a guardrail drill: the trained recommender stays ACTIVE (the control) and a deliberately broken variant
(`random` items, or `failing`: raises on every request) is the treatment on half the customers while the simulator
replays the window; prints how many decisions the treatment served and how long after its creation a guardrail
stopped it.

Keys: PANTRY_ML_ENGINEER_KEY (else .pantry/demo-keys.env), the simulator's keys.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx
import msgspec

from load_tests.simulate.cli import demo_keys

PAIRS = (("recommender", "popularity"), ("next_best_action", "rule"))
SHARE = 0.5
SETTLE_S = 3.0  # every worker re-reads ACTIVE and the running experiments within a second or two


def activate(admin: httpx.Client, model: str, version: str) -> None:
    r = admin.post(f"/admin/models/{model}/activate", json={"version": version})
    if r.status_code >= 300:
        raise click.ClickException(f"activate {model} {version}: {r.status_code} {r.text[:300]}")


def start(admin: httpx.Client, models_dir: Path) -> list[tuple[str, str, str]]:
    """(model, trained version, experiment id) per pair, the baseline ACTIVE as control."""
    from pantry.models import registry
    from pantry.models.variants import ensure_baseline

    started = []
    for model, variant in PAIRS:
        trained = registry.active_version(models_dir, model)
        if trained is None or trained.endswith(f"-{variant}"):
            raise click.ClickException(f"{model}: the ACTIVE version must be a trained one (is {trained})")
        baseline = ensure_baseline(models_dir, model, variant)
        activate(admin, model, baseline)
        r = admin.post("/admin/experiments", json={"model": model, "treatment": trained, "share": SHARE})
        if r.status_code != 201:
            raise click.ClickException(f"POST /admin/experiments ({model}): {r.status_code} {r.text[:300]}")
        started.append((model, trained, r.json()["experiment_id"]))
        click.echo(f"{model}: control {baseline} (ACTIVE), treatment {trained} on {SHARE:.0%}: experiment "
                   f"{started[-1][2]}")
    time.sleep(SETTLE_S)
    return started


def _rate(r: dict[str, Any] | None) -> str:
    if not r or r.get("rate") is None:
        return "-"
    return f"{100 * r['rate']:.2f}% [{100 * r['low']:.2f}, {100 * r['high']:.2f}]"


def _diff(d: dict[str, Any] | None) -> str:
    if not d or d.get("diff") is None:
        return "-"
    return (f"{100 * d['diff']:+.2f} pp [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}], "
            f"p={d['p_value']:.2g}")


def show(report: dict[str, Any]) -> None:
    e = report["experiment"]
    ended = f", {e['reason']}" if e.get("reason") else ""
    click.echo(f"\n{e['model']}: experiment {report['experiment_id']} ({e['status']}{ended})")
    for arm in ("control", "treatment"):
        a = report[arm]
        click.echo(f"  {arm:<9} {', '.join(a['versions']) or '-'}: {a['decisions']:,} decisions, "
                   f"{a['impressions']:,} impressions, {a['clicks']:,} clicks, CTR {_rate(a['ctr'])}, "
                   f"conversion {_rate(a['conversion'])}, revenue/1000 decisions {a['revenue_per_1000_decisions']}, "
                   f"coupon redemption {_rate(a['coupon_redemption'])}, substitution acceptance "
                   f"{_rate(a['substitution_acceptance'])}")
    d = report["difference"]
    click.echo(f"  treatment - control: CTR {_diff(d.get('ctr'))}; conversion {_diff(d.get('conversion'))}; "
               f"add-to-cart {_diff(d.get('add_to_cart_rate'))}; revenue/1000 decisions "
               f"{d.get('revenue_per_1000_decisions')}; substitution acceptance "
               f"{_diff(d.get('substitution_acceptance'))}; coupon redemption {_diff(d.get('coupon_redemption'))}")


def connect() -> tuple[httpx.Client, Path]:
    from pantry.demo import demo_keys_env
    from pantry.settings import get_settings

    settings = get_settings()
    key = os.environ.get("PANTRY_ML_ENGINEER_KEY") or demo_keys(demo_keys_env(settings)).get("PANTRY_ML_ENGINEER_KEY")
    if not key:
        raise click.ClickException("set PANTRY_ML_ENGINEER_KEY (`make demo` writes it to .pantry/demo-keys.env)")
    base = f"http://{settings.host}:{settings.port}"
    admin = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
    try:
        ready = admin.get("/readyz")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no pantry at {base} ({exc}): start it with `make demo`") from exc
    if ready.status_code != 200:
        raise click.ClickException(f"{base}/readyz: {ready.status_code} {ready.text[:300]}")
    return admin, settings.models_dir


def simulator(start_day: str, end_day: str, concurrency: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pantry.cli", "simulate", "--from", start_day, "--to", end_day,
                             "--concurrency", str(concurrency)])


@click.group()
def main() -> None:
    """Experiments driven by the shopper simulator."""


_window = [click.option("--from", "start_day", required=True, help="First day replayed (YYYY-MM-DD)."),
           click.option("--to", "end_day", required=True, help="The day after the last replayed."),
           click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True)]


def window(fn):
    for option in reversed(_window):
        fn = option(fn)
    return fn


@main.command()
@window
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the reports as JSON here.")
@click.option("--drain-s", type=float, default=30.0, show_default=True,
              help="Wait this long after the simulator for the live flow to count the last outcomes.")
def compare(start_day: str, end_day: str, concurrency: int, out: Path | None, drain_s: float) -> None:
    """The trained recommender and next-best-action (treatments) against their baselines (controls)."""
    admin, models_dir = connect()
    started = start(admin, models_dir)
    t0 = time.monotonic()
    try:
        code = simulator(start_day, end_day, concurrency).wait()
        click.echo(f"simulator exited {code} after {time.monotonic() - t0:.0f} s; waiting {drain_s:g} s "
                   "for the flow to count the last outcomes")
        time.sleep(drain_s)
        reports = [admin.get(f"/admin/experiments/{eid}").json() for _, _, eid in started]
    finally:
        for model, trained, eid in started:
            admin.post(f"/admin/experiments/{eid}/stop", json={"note": "load_tests.simulate.ab done"})
            activate(admin, model, trained)
    for report in reports:
        show(report)
    if out is not None:
        out.write_bytes(msgspec.json.format(msgspec.json.encode(reports)))
        click.echo(f"\nreports written to {out}")


@main.command()
@window
@click.option("--model", type=click.Choice(["recommender", "substitutions", "next_best_action"]), required=True)
@click.option("--treatment", required=True, help="The version given to half the customers (e.g. a retrained one).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Write the report as JSON here.")
@click.option("--drain-s", type=float, default=30.0, show_default=True,
              help="Wait this long after the simulator for the live flow to count the last outcomes.")
def versus(start_day: str, end_day: str, concurrency: int, model: str, treatment: str, out: Path | None,
           drain_s: float) -> None:
    """The ACTIVE version (control) against another version (treatment) on half the customers, over the window:
    e.g. a retrain that learned from the window before against the version it would replace."""
    from pantry.models import registry

    admin, models_dir = connect()
    control = registry.active_version(models_dir, model)
    r = admin.post("/admin/experiments", json={"model": model, "treatment": treatment, "share": SHARE})
    if r.status_code != 201:
        raise click.ClickException(f"POST /admin/experiments: {r.status_code} {r.text[:300]}")
    eid = r.json()["experiment_id"]
    click.echo(f"{model}: control {control} (ACTIVE), treatment {treatment} on {SHARE:.0%}: experiment {eid}")
    time.sleep(SETTLE_S)
    t0 = time.monotonic()
    try:
        code = simulator(start_day, end_day, concurrency).wait()
        click.echo(f"simulator exited {code} after {time.monotonic() - t0:.0f} s; waiting {drain_s:g} s "
                   "for the flow to count the last outcomes")
        time.sleep(drain_s)
        report = admin.get(f"/admin/experiments/{eid}").json()
    finally:
        admin.post(f"/admin/experiments/{eid}/stop", json={"note": "load_tests.simulate.ab versus done"})
    show(report)
    if out is not None:
        out.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
        click.echo(f"\nreport written to {out}")


@main.command()
@window
@click.option("--variant", type=click.Choice(["random", "failing"]), default="random", show_default=True)
def drill(start_day: str, end_day: str, concurrency: int, variant: str) -> None:
    """A broken recommender treatment on half the customers, until a guardrail stops it."""
    from pantry.models import registry
    from pantry.models.variants import ensure_baseline

    admin, models_dir = connect()
    trained = registry.active_version(models_dir, "recommender")
    broken = ensure_baseline(models_dir, "recommender", variant)
    r = admin.post("/admin/experiments", json={"model": "recommender", "treatment": broken, "share": SHARE})
    if r.status_code != 201:
        raise click.ClickException(f"POST /admin/experiments: {r.status_code} {r.text[:300]}")
    eid = r.json()["experiment_id"]
    click.echo(f"recommender: control {trained}, treatment {broken} on {SHARE:.0%}: experiment {eid}")
    sim = simulator(start_day, end_day, concurrency)
    try:
        while sim.poll() is None:
            got = admin.get(f"/admin/experiments/{eid}")
            if got.status_code == 200 and got.json()["experiment"]["status"] != "running":
                break
            time.sleep(0.5)
    finally:
        if sim.poll() is None:
            sim.terminate()
            sim.wait()
    time.sleep(SETTLE_S)  # the decisions answered before the stop reach the KPIs
    report = admin.get(f"/admin/experiments/{eid}").json()
    e = report["experiment"]
    if e["status"] == "running":
        admin.post(f"/admin/experiments/{eid}/stop", json={"note": "drill window ended"})
        raise click.ClickException(f"the window ended and no guardrail stopped {broken}")
    show(report)
    click.echo(f"\n{broken} stopped {e['ended_at'] - e['created_at']:.1f} s after the experiment was created, "
               f"after {report['treatment']['decisions']:,} treatment decisions ({report['control']['decisions']:,} "
               f"control): {e['reason']}")


if __name__ == "__main__":
    main()
