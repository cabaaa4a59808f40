"""A request id for every HTTP request: the client's `X-Request-ID` when it sends a sane one (up to 64 of
`A-Za-z0-9._-`: it may come from a proxy or a caller's trace), else a new random one. It goes back in the response's
`X-Request-ID` header, into the access log line, and into every log line written while the request is handled
(`RequestIdFilter` reads it from a context variable), so a client's report, the access log and a traceback meet on
one id."""

from __future__ import annotations

import logging
import os
import re
from contextvars import ContextVar

HEADER = b"x-request-id"
_SANE = re.compile(rb"[A-Za-z0-9._-]{1,64}")
CURRENT: ContextVar[str] = ContextVar("pantry_request_id", default="-")


def of_scope(scope) -> str:
    """The request's id (the client's if sane, else new), also made current for this request's context."""
    for name, value in scope["headers"]:
        if name == HEADER and _SANE.fullmatch(value):
            rid = value.decode()
            break
    else:
        rid = os.urandom(8).hex()
    CURRENT.set(rid)
    return rid


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record (`-` outside a request): use `%(request_id)s` in the format."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = CURRENT.get()
        return True


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
            handler.addFilter(RequestIdFilter())
