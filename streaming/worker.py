"""One more process of a flow that `pantry stream replay|live --processes N` runs (started by streaming.runner):
`python -m streaming.worker ARGS_JSON` (runner.WorkerArgs: the parent's settings and StreamConfig, the worker
count and the cluster's addresses). It runs the same flow on the same recovery store; Bytewax spreads the keyed
steps over all workers. SIGTERM (sent by process 0 when it is asked to stop) ends a live source held here."""

from __future__ import annotations

import signal
import sys
import threading

import msgspec


def main() -> None:
    from pantry.featurestore import repo
    from pantry.settings import from_json
    from streaming.dataflow import StreamConfig
    from streaming.runner import WorkerArgs, run_process

    args = msgspec.json.decode(sys.argv[1], type=WorkerArgs)
    settings = from_json(args.settings)

    def ready() -> None:  # the parent starts its clock and joins the cluster once every process is here
        print("ready", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run_process(settings, msgspec.json.decode(args.config, type=StreamConfig), args.workers, stop_flag=stop.is_set,
                layout=repo.layout(settings), process_id=args.process_id, addresses=args.addresses, on_start=ready)


if __name__ == "__main__":
    main()
