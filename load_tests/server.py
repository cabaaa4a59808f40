"""Find a running pantry, or start one in the background for the length of a run (and stop it after)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pantry.settings import Settings, subprocess_env


class ServerError(RuntimeError):
    pass


def answers(base_url: str, path: str = "/healthz", timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(base_url.rstrip("/") + path, timeout=timeout_s) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait_until_answers(base_url: str, proc: subprocess.Popen | None, timeout_s: float, log: Path | None,
                       path: str = "/healthz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise ServerError(f"`{' '.join(map(str, proc.args))}` exited with {proc.returncode} before answering:"
                              f"\n{tail}")
        if answers(base_url, path):
            return
        time.sleep(0.25)
    raise ServerError(f"no answer from {base_url}{path} within {timeout_s:.0f} s")


@contextmanager
def background(cmd: list[str], env: dict[str, str], base_url: str, log: Path, health_path: str = "/healthz",
               timeout_s: float = 120.0) -> Iterator[str]:
    """Any server in its own process group: yields base_url once health_path answers 200, stops it on exit."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_until_answers(base_url, proc, timeout_s, log, health_path)
        yield base_url
    finally:
        stop_group(proc)


def pantry_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("pantry")), *args]


@contextmanager
def background_serve(settings: Settings, log: Path, port: int | None = None, workers: int | None = None,
                     timeout_s: float = 120.0, live: bool = False) -> Iterator[str]:
    """`pantry serve` in its own process group on settings.host:port; yields its base URL, stops it on exit.
    Without the live dataflow unless `live` (`--no-live`: the API alone, as the load figures were measured)."""
    env = subprocess_env(settings)
    env["PANTRY_HOST"] = settings.host
    env["PANTRY_PORT"] = str(port or settings.port)
    if workers:
        env["PANTRY_WORKERS"] = str(workers)
    base_url = f"http://{settings.host}:{env['PANTRY_PORT']}"
    cmd = pantry_command("serve", *(() if live else ("--no-live",)))
    with background(cmd, env, base_url, log, "/healthz", timeout_s) as url:
        yield url


def stop_group(proc: subprocess.Popen, timeout_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
