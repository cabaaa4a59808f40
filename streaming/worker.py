"""One more process of a flow that `pantry stream replay --processes N` runs (started by streaming.runner):
`python -m streaming.worker PROCESS_ID`, with the settings, the StreamConfig and the cluster's addresses in the
environment. It runs the same flow on the same recovery store; Bytewax spreads the keyed steps over all workers."""

from __future__ import annotations

import os
import sys

import msgspec


def main() -> None:
    from pantry import feast_repo
    from pantry.settings import get_settings
    from streaming.dataflow import StreamConfig
    from streaming.runner import run_process

    config = msgspec.json.decode(os.environ["PANTRY_STREAM_CONFIG"], type=StreamConfig)
    def ready() -> None:  # the parent starts its clock and joins the cluster once every process is here
        print("ready", flush=True)

    settings = get_settings()
    run_process(settings, config, int(os.environ.get("PANTRY_STREAM_WORKERS", "1")), layout=feast_repo.layout(settings),
                process_id=int(sys.argv[1]), addresses=os.environ["PANTRY_STREAM_ADDRESSES"].split(";"), on_start=ready)


if __name__ == "__main__":
    main()
