"""`make demo`: everything from nothing to a serving pantry, each step timed, idempotent, stopped cleanly.

Steps: embedded Redis up -> Complete Journey into parquet -> feast apply (+ batch views online) -> replay the events
through the Bytewax dataflow -> train and activate the models -> approve the dataset's historical campaigns -> serve
on host:port with the live dataflow beside it, both supervised (pantry/supervisor.py: a child that dies is restarted).
Ctrl-C (or SIGTERM) stops everything this command started, Redis included; the data stays under .pantry/ and
artifacts/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

import pyarrow.compute as pc

from pantry import apikeys, dataset, dataset_load, supervisor
from pantry.redis_server import EmbeddedRedis, ensure_redis
from pantry.settings import Settings, subprocess_env


class StepFailed(RuntimeError):
    pass


class Timer:
    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []

    def run(self, name: str, fn: Callable[[], object]) -> None:
        print(f"\n==> {name}", flush=True)
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        self.steps.append((name, took))
        print(f"    {name}: {took:.1f} s", flush=True)

    def table(self) -> str:
        width = max(len(n) for n, _ in self.steps)
        lines = [f"  {n:<{width}}  {t:7.1f} s" for n, t in self.steps]
        lines.append(f"  {'total':<{width}}  {sum(t for _, t in self.steps):7.1f} s")
        return "\n".join(lines)


def _pantry(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("pantry")), *args]


def _check_call(cmd: list[str], settings: Settings) -> None:
    result = subprocess.run(cmd, env=subprocess_env(settings))
    if result.returncode != 0:
        raise StepFailed(f"`{' '.join(cmd[1:])}` exited with {result.returncode}")


# (variable in demo-keys.env, key id, scopes): one key per role a client or an operator plays
DEMO_KEYS = (
    ("PANTRY_CLIENT_KEY", "demo-client", ("answers",)),
    ("PANTRY_INGEST_KEY", "demo-ingest", ("ingest",)),
    ("PANTRY_FEATURES_KEY", "demo-features", ("features",)),
    ("PANTRY_MERCHANDISER_KEY", "demo-merchandiser", ("merchandiser",)),
    ("PANTRY_ML_ENGINEER_KEY", "demo-ml-engineer", ("ml_engineer",)),
    ("PANTRY_ADMIN_KEY", "demo-admin", ("admin",)),
)


def demo_keys_env(settings: Settings) -> Path:
    return settings.data_dir / "demo-keys.env"


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)


def ensure_demo_keys(settings: Settings) -> dict[str, str] | None:
    """The demo's keys (variable -> key): made once per data dir, reused while the keys file still has their hashes.
    Writes `<data_dir>/demo-keys.env` (the keys, shell lines) and the keys file (their sha256, marked as demo keys),
    both 0600. None if the keys file is an operator's own (not made by the demo): it is left alone."""
    env_file, keys_file = demo_keys_env(settings), settings.api_keys_path
    table = apikeys.load((), keys_file)
    if keys_file.exists() and not table.demo_files:
        print(f"    {keys_file} holds keys that are not the demo's: no demo keys made", flush=True)
        return None
    if env_file.exists():
        known = dict(line.split("=", 1) for line in env_file.read_text().splitlines()
                     if "=" in line and not line.startswith("#"))
        if all(var in known and table.lookup(known[var]) is not None for var, _, _ in DEMO_KEYS):
            return {var: known[var] for var, _, _ in DEMO_KEYS}
    made = {var: apikeys.new_key() for var, _, _ in DEMO_KEYS}
    entries = [apikeys.entry_line(key_id, scopes, made[var]) for var, key_id, scopes in DEMO_KEYS]
    _write_private(keys_file, apikeys.DEMO_MARKER + "\n" + "\n".join(entries) + "\n")
    _write_private(env_file, "# pantry demo keys: `source` this file; the service knows only their sha256\n"
                   + "".join(f"{var}={made[var]}\n" for var, _, _ in DEMO_KEYS))
    return made


def example_ids(settings: Settings, until: str | None) -> dict[str, int]:
    """A frequent shopper, their most used store and their most bought product (real ids for the curl examples)."""
    table = dataset.read_events(settings, columns=["type", "customer_id", "store_id", "product_id", "ts"])
    table = table.filter(pc.equal(table["type"], "purchase"))
    df = table.to_pandas()
    if until:
        df = df[df["ts"] < until]
    customer = int(df["customer_id"].value_counts().index[0])
    mine = df[df["customer_id"] == customer]
    return {
        "customer_id": customer,
        "store_id": int(mine["store_id"].value_counts().index[0]),
        "product_id": int(mine["product_id"].value_counts().index[0]),
        "unknown_customer": int(df["customer_id"].max()) + 100_000,
    }


def curl_examples(settings: Settings, ids: dict[str, int]) -> str:
    base = f"http://{settings.host}:{settings.port}"
    h = "-H 'content-type: application/json' -H \"X-API-Key: $PANTRY_CLIENT_KEY\""
    env_file = demo_keys_env(settings)
    try:
        env_file = env_file.relative_to(Path.cwd())
    except ValueError:
        pass
    return "\n".join(
        [
            f"source {env_file}   # the demo's API keys (PANTRY_CLIENT_KEY, ..., PANTRY_ADMIN_KEY)",
            f"curl -s {base}/v1/recommendations {h} -d '{{\"customer_id\": {ids['customer_id']}, "
            f"\"store_id\": {ids['store_id']}, \"k\": 5}}'",
            f"curl -s {base}/v1/substitutions {h} -d '{{\"customer_id\": {ids['customer_id']}, "
            f"\"store_id\": {ids['store_id']}, \"product_ids\": [{ids['product_id']}]}}'",
            f"curl -s {base}/v1/next-best-action {h} "
            f"-d '{{\"customer_id\": {ids['customer_id']}, \"channel\": \"app\"}}'",
            f"curl -s {base}/v1/recommendations {h} -d '{{\"customer_id\": {ids['unknown_customer']}}}'   # cold start",
            f"curl -s {base}/admin/audit -H \"Authorization: Bearer $PANTRY_ADMIN_KEY\"   # the audit log",
            f"# the operator console: {base}/console (log in with a key of {env_file}, e.g. PANTRY_ADMIN_KEY)",
        ]
    )


def _answers_200(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


TWO_PROCESSES_FROM = 500_000  # events; below, a second process's start costs more than it saves


def replay_processes(settings: Settings, until: str | None) -> int:
    """Two processes when there are two cores and the replay is large: the full year (1.47M events) replays ~2x
    faster (docs/STREAMING.md, Scaling), but 54,152 events of 40 households took 13.2 s in two against 6.3 s in one."""
    if (os.cpu_count() or 1) < 2:
        return 1
    cut = datetime.fromisoformat(until).replace(tzinfo=UTC) if until else None
    return 2 if dataset.read_events(settings, until=cut, columns=["ts"]).num_rows >= TWO_PROCESSES_FROM else 1


def run_demo(settings: Settings, until: str | None, households: int | None, serve: bool) -> int:
    timer = Timer()
    server: EmbeddedRedis | None = None
    stopping = False

    def shutdown(signum: int | None = None, frame: FrameType | None = None) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\n==> stopping", flush=True)
        if server is not None and server.started_here:
            server.stop()
            print("    embedded redis stopped (data kept in .pantry/)", flush=True)

    signal.signal(signal.SIGTERM, lambda s, f: (shutdown(s, f), sys.exit(0)))
    until_args = ["--until", until] if until else []
    try:

        def redis_up() -> None:
            nonlocal server
            server = ensure_redis(settings, daemonize=True)

        timer.run("redis", redis_up)
        timer.run("load data", lambda: dataset_load.load(settings, households=households))
        timer.run("feast apply", lambda: _check_call(_pantry("feast", "apply"), settings))
        processes = ["--processes", str(replay_processes(settings, until))]
        timer.run("stream replay", lambda: _check_call(_pantry("stream", "replay", *processes, *until_args), settings))
        timer.run("train", lambda: _check_call(_pantry("train", *until_args), settings))
        timer.run("api keys", lambda: ensure_demo_keys(settings))
        timer.run(
            "approve campaigns",
            lambda: _check_call(_pantry("campaigns", "seed", "--approve-historical"), settings),
        )
        print("\n==> step times\n" + timer.table(), flush=True)
        if not serve:
            return 0

        start = time.perf_counter()
        ready_url = f"http://{settings.host}:{settings.port}/readyz"

        def announce(sup: supervisor.Supervisor) -> None:
            # supervised meanwhile: a child that dies while starting is restarted
            if not sup.wait_until(lambda: _answers_200(ready_url), 180):
                if sup.stopping:
                    return
                raise StepFailed(f"the service did not become ready (see {ready_url})")
            print(f"\n==> serving on http://{settings.host}:{settings.port} with the live dataflow (ready in "
                  f"{time.perf_counter() - start:.1f} s; OpenAPI at /schema; Ctrl-C stops everything)\n", flush=True)
            print(curl_examples(settings, example_ids(settings, until)), flush=True)

        print("\n==> serve", flush=True)
        return supervisor.serve(settings, settings.workers, settings.host, settings.port, live=True,
                                on_started=announce)
    except KeyboardInterrupt:
        return 0
    except StepFailed as exc:
        print(f"\npantry demo: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutdown()
