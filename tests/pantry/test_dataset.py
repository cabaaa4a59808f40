from datetime import UTC, datetime

import pyarrow.compute as pc

from pantry import dataset, dataset_load


def test_slice_is_ordered_and_deterministic(settings, data_slice):
    events = dataset.read_events(settings).to_pandas()
    m = dataset.manifest(settings)
    assert len(events) == m.rows["events"] > 10_000
    assert events["ts"].is_monotonic_increasing
    assert events["event_id"].is_unique
    assert set(events["type"]) == {"purchase", "coupon_redemption"}
    assert events["customer_id"].nunique() == 40
    # purchases: every line of the chosen households, with the original basket values
    purchases = events[events["type"] == "purchase"]
    assert (purchases["sales_value"] >= 0).all() and purchases["basket_id"].notna().all()


def test_until_is_strict(settings, data_slice):
    cut = datetime(2017, 6, 1, tzinfo=UTC)
    table = dataset.read_events(settings, until=cut)
    assert pc.max(table["ts"]).as_py() < cut
    everything = dataset.read_events(settings)
    assert table.num_rows == pc.sum(pc.less(everything["ts"], cut)).as_py()


def test_reload_is_skipped_when_done(settings, data_slice):
    before = (settings.dataset_dir / "events.parquet").stat().st_mtime_ns
    dataset_load.load(settings, households=40, progress=False)
    assert (settings.dataset_dir / "events.parquet").stat().st_mtime_ns == before
