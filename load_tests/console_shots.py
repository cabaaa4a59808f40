"""Screenshots of every console page and each page's server time, from a running pantry (e.g. after `make demo`):

    python -m load_tests.console_shots --url http://127.0.0.1:8000 --out docs/img/console

Logs in with PANTRY_ADMIN_KEY (every page; `make demo` writes it to .pantry/demo-keys.env), takes each page at 1280 px
and at a phone's 390 px with the tests' browser (load_tests/browser.py), then loads each page LOADS more times and
prints the server time its Server-Timing header reports (median and max), as the Markdown table docs/CONSOLE.md shows.
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

import click

from load_tests.browser import DESKTOP, PHONE, chromium, log_in

PAGES = {"overview": "/console", "campaigns": "/console/campaigns", "decisions": "/console/decisions",
         "models": "/console/models", "features": "/console/features"}
LOADS = 10
_DUR = re.compile(r"dur=([0-9.]+)")


def server_ms(headers: dict[str, str]) -> float:
    match = _DUR.search(headers.get("server-timing", ""))
    if not match:
        raise RuntimeError("no Server-Timing header: is this a pantry console page?")
    return float(match.group(1))


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("docs/img/console"), show_default=True)
@click.option("--decision-customer", type=int, default=None, help="the Decisions page looks this customer up")
@click.option("--decision-id", default=None, help="also a page of this one decision (`decision.png`)")
def main(url: str, out: Path, decision_customer: int | None, decision_id: str | None) -> None:
    key = os.environ.get("PANTRY_ADMIN_KEY")
    if not key:
        raise click.UsageError("set PANTRY_ADMIN_KEY (`source .pantry/demo-keys.env` after `make demo`)")
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(PAGES)
    if decision_customer is not None:
        paths["decisions"] += f"?customer_id={decision_customer}"
    if decision_id is not None:
        paths["decision"] = f"/console/decisions?decision_id={decision_id}"
    rows = []
    with chromium() as browser:
        for name, viewport in (("", DESKTOP), ("-phone", PHONE)):
            context = browser.new_context(viewport=viewport)
            page = context.new_page()
            log_in(page, url, key)
            for page_name, path in paths.items():
                answer = page.goto(url + path)
                if answer is None or answer.status != 200:
                    raise click.ClickException(f"{path}: {answer.status if answer else 'no answer'}")
                page.screenshot(path=str(out / f"{page_name}{name}.png"), full_page=True)
                if not name:
                    times = [server_ms(page.goto(url + path).headers) for _ in range(LOADS)]
                    rows.append((page_name, path, statistics.median(times), max(times)))
            context.close()
    click.echo(f"| page | path | server time, median of {LOADS} | max |\n|---|---|---|---|")
    for page_name, path, median, worst in rows:
        click.echo(f"| {page_name} | `{path}` | {median:.1f} ms | {worst:.1f} ms |")


if __name__ == "__main__":
    main()
