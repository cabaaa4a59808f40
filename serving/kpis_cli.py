"""`pantry kpis export`: the online KPIs of a day (or of every day) to `<data_dir>/exports/kpis/<day>.parquet`, one
row per (model, version, experiment, arm, surface) with its counts and rates (pantry/kpis.py)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import click

from pantry.settings import Settings, get_settings


def read_totals(client) -> dict:
    from pantry import kpis

    pipe = client.pipeline(transaction=False)
    for key in kpis.KPI_HASHES:
        pipe.hgetall(key)
    return kpis.merge_shards(pipe.execute())


def yesterday(settings: Settings, client) -> str:
    """The day before today by the service clock (the event clock in event mode: the data is from 2017)."""
    from pantry.clock import read_watermark, resolve_now

    return (resolve_now(settings.clock, None, read_watermark(client)).date() - timedelta(days=1)).isoformat()


def export_day(totals: dict, day: str, out_dir: Path) -> tuple[Path, int]:
    """The day's rows to out_dir/<day>.parquet (written even when empty: the day had no decisions)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pantry import kpis

    rows = [kpis.row(key, counts) for key, counts in sorted(kpis.select(totals, day_from=day, day_to=day).items())]
    fields = [(name, pa.string()) for name in kpis.KpiKey.__struct_fields__]
    fields += [(name, pa.float64() if name == "revenue" else pa.int64()) for name in kpis.COUNT_NAMES]
    fields += [("latency", pa.list_(pa.int64()))] + [(name, pa.float64()) for name in kpis.RATE_NAMES]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{day}.parquet"
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), tmp)
    tmp.replace(path)  # a reader never sees half a file
    return path, len(rows)


@click.group()
def kpis() -> None:
    """Online KPIs (the live flow's outcome join): export them."""


@kpis.command("export")
@click.option("--day", default=None, help="YYYY-MM-DD (default: yesterday by the service clock).")
@click.option("--all", "all_days", is_flag=True, help="Every day the KPIs hold (one file per day).")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False), help="Directory (default: "
              "<data_dir>/exports/kpis).")
def kpis_export(day: str | None, all_days: bool, out: str | None) -> None:
    """Write <day>.parquet: one row per model, version, experiment, arm and surface with counts and rates."""
    from pantry.redis_server import sync_client

    settings = get_settings()
    if day is not None:
        try:
            date.fromisoformat(day)
        except ValueError as exc:
            raise click.BadParameter(f"{day!r} is not a YYYY-MM-DD day", param_hint="--day") from exc
        if all_days:
            raise click.UsageError("--day and --all exclude each other")
    out_dir = Path(out) if out else settings.data_dir / "exports" / "kpis"
    try:
        client = sync_client(settings, timeout_s=10.0)
        totals = read_totals(client)
        days = sorted({key.day for key in totals}) if all_days else [day or yesterday(settings, client)]
        for d in days:
            path, n = export_day(totals, d, out_dir)
            click.echo(f"{d}: {n} rows -> {path}")
    except Exception as exc:  # Redis down, unwritable path: a message, not a traceback
        raise click.ClickException(f"export failed: {exc}") from exc
