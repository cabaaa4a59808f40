"""Run Locust headless (one process or distributed) and leave CSV + HTML reports in an output directory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pantry.settings import Settings, subprocess_env

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
SIMULATE_LOCUSTFILE = Path(__file__).with_name("simulate") / "locustfile.py"  # pantry load --simulate
DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+s)?$|^\d+$")


def parse_duration(text: str) -> int:
    """'60s', '2m', '1h30m', '90' -> seconds; anything else is a clear error."""
    text = text.strip().lower()
    if not text or not DURATION.match(text):
        raise ValueError(f"duration {text!r} must look like 60s, 2m, 1h30m or a number of seconds")
    if text.isdigit():
        return int(text)
    seconds = 0
    for amount, unit in re.findall(r"(\d+)([hms])", text):
        seconds += int(amount) * {"h": 3600, "m": 60, "s": 1}[unit]
    if seconds <= 0:
        raise ValueError(f"duration {text!r} must be positive")
    return seconds


@dataclass
class LocustRun:
    out_dir: Path
    csv_prefix: Path
    html: Path
    log: Path
    returncode: int


def locust_command(
    host: str,
    users: int,
    rate: float,
    duration_s: int,
    out_dir: Path,
    processes: int = 1,
    spawn_rate: float | None = None,
    user_classes: tuple[str, ...] = (),
    locustfile: Path = LOCUSTFILE,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "locust",
        "-f", str(locustfile),
        "--headless",
        "--host", host,
        "--users", str(users),
        "--spawn-rate", f"{spawn_rate or max(users / 5, 1):g}",
        "--run-time", f"{duration_s}s",
        "--only-summary",
        "--csv", str(out_dir / "stats"),
        "--html", str(out_dir / "report.html"),
        "--json-file", str(out_dir / "stats"),  # the final figures (the CSV can lag the end by a second)
        "--logfile", str(out_dir / "locust.log"),
        "--loglevel", "WARNING",
        "--exit-code-on-error", "0",  # the SLO gate decides the exit status, with reasons
        "--pantry-rate", f"{rate:g}",
    ]
    if processes != 1:
        cmd += ["--processes", str(processes)]
    cmd += list(user_classes)
    return cmd


def start_locust(settings: Settings, out_dir: Path, **kwargs) -> tuple[subprocess.Popen, LocustRun]:
    """Start Locust; its console (the final summary) goes to out_dir/console.txt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = locust_command(out_dir=out_dir, **kwargs)
    (out_dir / "command.txt").write_text(" ".join(cmd) + "\n")
    env = subprocess_env(settings)  # the id pool reads the dataset under the same data dir
    with (out_dir / "console.txt").open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return proc, LocustRun(out_dir, out_dir / "stats", out_dir / "report.html", out_dir / "locust.log", -1)


def run_locust(settings: Settings, out_dir: Path, progress: bool = True, **kwargs) -> LocustRun:
    """Run Locust to the end, with a progress bar over its run time."""
    from tqdm import tqdm

    proc, run = start_locust(settings, out_dir, **kwargs)
    duration_s = int(kwargs["duration_s"])
    started = time.monotonic()
    with tqdm(total=duration_s, desc="load", unit="s", disable=not progress, leave=False, mininterval=5) as bar:
        while proc.poll() is None:
            time.sleep(0.5)
            done = min(duration_s, int(time.monotonic() - started))
            if done > bar.n:
                bar.update(done - bar.n)  # update() honours mininterval (refresh() would print every time)
    run.returncode = proc.returncode
    return run
