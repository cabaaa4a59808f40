"""Structured access log: one JSON line per HTTP request, with no payloads (no bodies, no query strings, and the
route template rather than the raw path), so a log line never carries a customer's data.

    {"ts":1795446212.412,"method":"POST","route":"/v1/recommendations","status":200,"ms":2.41,"pid":4242}
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from pantry.settings import Settings


class AccessRecord(msgspec.Struct):
    ts: float
    method: str
    route: str
    status: int
    ms: float
    pid: int


_encoder = msgspec.json.Encoder()
AccessLogger = Callable[[str, str, int, float], None]


def access_logger(settings: Settings) -> AccessLogger | None:
    """A function (method, route, status, seconds) -> None writing one line per call, or None when "off".
    Every worker appends to the same file (O_APPEND: one write per line keeps lines whole)."""
    target = settings.access_log_target
    if target == "off":
        return None
    logger = logging.getLogger("pantry.access")
    logger.propagate = False  # the lines are the record: no level/name prefix from the root handler
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        if target == "-":
            handler: logging.Handler = logging.StreamHandler(sys.stderr)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(target, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    pid = os.getpid()

    def log(method: str, route: str, status: int, seconds: float) -> None:
        record = AccessRecord(round(time.time(), 3), method, route, status, round(seconds * 1000, 2), pid)
        logger.info(_encoder.encode(record).decode())

    return log
