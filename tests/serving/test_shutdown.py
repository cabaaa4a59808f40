"""A worker's shutdown ends its background tasks, even those whose first cancellation is lost."""

from __future__ import annotations

import asyncio
import time

import msgspec
from litestar.testing import AsyncTestClient

from serving.app import create_app
from serving.services import cancel_and_wait


async def _loses_one_cancellation() -> None:
    """As a watcher does when asyncio.wait_for (Python 3.11) drops the cancellation of a task in a Redis write:
    it goes on to its next sleep."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        pass
    await asyncio.sleep(3600)


async def test_a_task_that_loses_a_cancellation_still_ends():
    once = asyncio.create_task(_loses_one_cancellation())
    await asyncio.sleep(0)
    once.cancel()
    _, pending = await asyncio.wait([once], timeout=0.2)
    assert pending == {once}  # one cancel() is not enough for it

    task = asyncio.create_task(_loses_one_cancellation())
    await asyncio.sleep(0)
    started = time.monotonic()
    assert await cancel_and_wait([task, once], wait_s=2.0) == set()
    assert task.cancelled() and once.cancelled()
    assert time.monotonic() - started < 0.5


async def test_a_worker_started_and_stopped_in_a_row_stops_at_once_every_time(feast_applied, tmp_path):
    # each start and stop races the watchers' first Redis connections; before cancel_and_wait about 1 stop in 20
    # waited out STOP_WAIT_S, and one in CI hung the test's event loop for 300 s
    settings = msgspec.structs.replace(feast_applied, api_keys=(), api_keys_file=tmp_path / "none")
    slowest = 0.0
    for _ in range(30):
        started = time.monotonic()
        async with AsyncTestClient(app=create_app(settings), timeout=10) as client:
            assert (await client.get("/healthz")).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
    assert slowest < 1.5, f"a start and stop took {slowest:.2f} s"
