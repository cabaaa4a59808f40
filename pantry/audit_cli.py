"""Admin actions run on the host (`pantry models activate|rollback`, `pantry campaigns seed`) in the audit log
(pantry/audit.py), with `cli:<user>` as actor."""

from __future__ import annotations

import os
import pwd
from typing import Any

from pantry import audit
from pantry.redis_server import sync_client
from pantry.settings import Settings


def cli_actor() -> str:
    try:
        return "cli:" + pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"cli:uid{os.getuid()}"


def record(settings: Settings, action: str, target: str, *, before: Any = None, after: Any = None,
           note: str | None = None) -> bool:
    """Append the entry; False when Redis cannot be reached (the action is done: the caller warns)."""
    try:
        sync_client(settings, timeout_s=5.0).xadd(*audit.xadd_args(
            audit.entry(cli_actor(), action, target, before=before, after=after, note=note)))
        return True
    except Exception:  # any Redis failure: reported by the caller, the action itself stands
        return False
