"""Structured access log: one JSON line per HTTP request, with no payloads (no bodies, no query strings, and the
route template rather than the raw path), so a log line never carries a customer's data. `key` is the id of the API
key the request was accepted with (never the key; null for open routes and refused requests).

    {"ts":1795446212.412,"method":"POST","route":"/v1/recommendations","status":200,"ms":2.41,"pid":4242,"key":"shop",
     "request_id":"9f2c41d07a5be3e1"}

`request_id` is the one in the response's X-Request-ID header and in the service's log lines (serving/request_id.py).
"""

from __future__ import annotations

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
    key: str | None = None
    request_id: str | None = None


_encoder = msgspec.json.Encoder()
AccessLogger = Callable[[str, str, int, float, str | None, str | None], None]


def access_logger(settings: Settings) -> AccessLogger | None:
    """A function (method, route, status, seconds, key id, request id) -> None writing one line per call, or None
    when "off".
    Every worker appends to the same file with one `write` per line (O_APPEND keeps lines whole); no logging
    module in between: its logger/handler/formatter chain cost more than the rest of the line."""
    target = settings.access_log_target
    if target == "off":
        return None
    if target == "-":
        fd = sys.stderr.fileno()
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    write, now, encode = os.write, time.time, _encoder.encode

    def log(method: str, route: str, status: int, seconds: float, key: str | None = None,
            request_id: str | None = None) -> None:
        line = encode(AccessRecord(round(now(), 3), method, route, status, round(seconds * 1000, 2), pid, key,
                                   request_id)) + b"\n"
        try:
            write(fd, line)
        except OSError:  # a full disk or a closed stderr must not fail the request
            pass

    return log
