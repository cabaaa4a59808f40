"""`pantry evaluate-served`: the served-path evaluation at several cuts, written next to the in-process figures."""

from __future__ import annotations

import click

DEFAULT_CUTS = "2017-09-01,2017-10-01,2017-11-01,2017-11-26"


@click.command("evaluate-served")
@click.option("--cuts", default=DEFAULT_CUTS, show_default=True, help="Comma-separated cuts (YYYY-MM-DD).")
@click.option("--cases", type=click.IntRange(1), default=2000, show_default=True,
              help="Sampled cases per substitution protocol and recommendation customers per cut "
                   "(next best action: every redemption after the cut).")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Where each cut's service lives (default: <data dir>/served-eval/CUT; kept for the next run).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="The report whose served-path section is replaced (default docs/MODEL_REPORT.md).")
@click.option("--no-report", is_flag=True, help="Write only the JSON and markdown under artifacts/served_eval/.")
@click.option("--seed", type=int, default=0, show_default=True, help="The case sample's seed.")
@click.option("--from-json", "from_json", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Write the report section from a saved run's served_eval.json (nothing is built or asked).")
def evaluate_served(cuts: str, cases: int, root: str | None, report_path: str | None, no_report: bool,
                    seed: int, from_json: str | None) -> None:
    """For each cut: build and serve `pantry demo --until CUT` on its own port, ask the HTTP API for every
    evaluation case with `as_of`, score the same cases in-process and by the rules, stop the service."""
    import sys
    import time
    from datetime import UTC, datetime
    from pathlib import Path

    import msgspec

    from load_tests.served_eval import report
    from load_tests.served_eval.evaluate import evaluate_cut
    from pantry.settings import ROOT, get_settings
    from training.data import parse_until

    settings = get_settings()
    target = None if no_report else Path(report_path) if report_path else ROOT / "docs" / "MODEL_REPORT.md"
    if from_json:
        report.write(msgspec.json.decode(Path(from_json).read_bytes()), None, target)
        click.echo(f"report written to {target}" if target else "nothing to write (--no-report)")
        return
    names = [c.strip() for c in cuts.split(",") if c.strip()]
    for name in names:
        try:
            parse_until(name)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--cuts") from exc
    base = Path(root) if root else settings.data_dir / "served-eval"
    started = time.perf_counter()
    results = []
    for name in names:
        click.echo(f"==> cut {name}: pantry demo --until {name} under {base / name}")
        results.append(evaluate_cut(settings, base, name, cases, seed))
        click.echo(f"    done: {results[-1]['timings_s']}")
    total = time.perf_counter() - started
    per_cut = ", ".join(f"{r['cut'][:10]} {sum(r['timings_s'].values()) / 60:.1f} min" for r in results)
    command = f"pantry evaluate-served --cuts {','.join(names)} --cases {cases}" + (f" --seed {seed}" if seed else "")
    run = {"command": command, "argv": sys.argv[1:], "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
           "total_s": total, "timings": per_cut, "cases": cases, "seed": seed, "cuts": results}
    out_dir = settings.artifacts_dir / "served_eval" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report.write(run, out_dir, target)
    click.echo(f"figures: {out_dir / 'served_eval.json'}" + (f"; report: {target}" if target else ""))
