"""`pantry drift report [--out FILE]`: the drift of every served model version as one HTML page (a summary table and,
per feature, a PNG of the reference vs live fractions per bin with its PSI), read from Redis and the registry like
GET /admin/drift (pantry/drift_report.py). Images are embedded (base64): the page is one file to share."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import click

from pantry.settings import get_settings

STATUS_COLOURS = {"stable": "#2e7d32", "moderate": "#ef6c00", "significant": "#c62828", "insufficient": "#757575",
                  None: "#757575"}


def _plot(feature) -> str:
    """A PNG (base64) of one feature: reference and live fraction per bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(feature.bins))
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=80)
    ax.bar(x - 0.2, feature.reference_fractions, width=0.4, label="reference (training)", color="#90a4ae")
    ax.bar(x + 0.2, feature.live_fractions, width=0.4, label=f"live ({feature.live_count:,})",
           color=STATUS_COLOURS[feature.status])
    ax.set_xticks(x, feature.bins, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("share of decisions")
    psi = "n/a" if feature.psi is None else f"{feature.psi:.3f}"
    ax.set_title(f"{feature.feature}: PSI {psi} ({feature.status})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def render(report) -> str:
    esc = html.escape
    t = report.thresholds
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pantry drift</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px}img{margin:4px}</style></head><body>",
        f"<h1>pantry drift</h1><p>Generated {esc(report.generated_at.isoformat(timespec='seconds'))}; live "
        f"decisions of the UTC days {esc(', '.join(report.days))} against each version's training reference. "
        f"PSI &lt; {t.moderate} stable, {t.moderate}&ndash;{t.significant} moderate, &gt; {t.significant} "
        f"significant; fewer than {t.min_count} live decisions: insufficient.</p>",
        "<h2>Summary</h2><table><tr><th>model</th><th>version</th><th>active</th><th>status</th><th>live decisions"
        "</th><th>worst</th><th>trained until</th><th>features above moderate</th></tr>",
    ]
    for m in report.models:
        above = [f"{f.feature} ({f.psi:.2f})" for f in m.features if f.psi is not None and f.psi >= t.moderate]
        out.append(f"<tr><td>{esc(m.model)}</td><td>{esc(m.version)}</td><td>{'yes' if m.active else ''}</td>"
                   f"<td>{esc(m.status)}</td><td>{m.live_count:,}</td>"
                   f"<td style='color:{STATUS_COLOURS[m.worst]}'>{esc(m.worst or '')}</td>"
                   f"<td>{esc(m.trained_until or '')}</td><td>{esc(', '.join(above))}</td></tr>")
    out.append("</table>")
    for m in report.models:
        out.append(f"<h2>{esc(m.model)} {esc(m.version)}{' (active)' if m.active else ''}</h2>")
        if m.status != "ok":
            out.append("<p>No drift reference for this version (trained before references existed).</p>")
            continue
        out.append("<table><tr><th>feature</th><th>PSI</th><th>status</th><th>live</th></tr>")
        for f in m.features:
            psi = "" if f.psi is None else f"{f.psi:.4f}"
            out.append(f"<tr><td>{esc(f.feature)}</td><td>{psi}</td><td style='color:{STATUS_COLOURS[f.status]}'>"
                       f"{esc(f.status)}</td><td>{f.live_count:,}</td></tr>")
        out.append("</table><div>")
        out.extend(f"<img alt='{esc(m.model)} {esc(f.feature)}' src='data:image/png;base64,{_plot(f)}'>"
                   for f in m.features)
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


@click.group()
def drift() -> None:
    """Drift of the served models' inputs and scores against their training references."""


@drift.command("report")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The HTML file to write (default: <data dir>/reports/drift.html).")
def drift_report_cmd(out: Path | None) -> None:
    """Write an HTML page: a summary table and, per feature of every served version, reference vs live bars."""
    from pantry import drift_report
    from pantry.redis_server import sync_client

    settings = get_settings()
    try:
        report = drift_report.read_sync(settings, sync_client(settings))
    except Exception as exc:  # Redis not reachable: a message, not a traceback
        raise click.ClickException(f"drift counts not readable: {exc}") from exc
    out = out or settings.data_dir / "reports" / "drift.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    plots = sum(len(m.features) for m in report.models)
    click.echo(f"drift report: {len(report.models)} model versions, {plots} plots -> {out}")
    for m in report.models:
        click.echo(f"  {m.model} {m.version}{' (active)' if m.active else ''}: {m.status}, {m.live_count:,} live "
                   f"decisions, worst {m.worst or '-'}")
