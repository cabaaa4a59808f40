"""API keys: generation, the `ID:SCOPE+SCOPE:SHA256HEX` entry format, the keys file, and the lookup table.

A key is `pantry_` + 43 url-safe characters (256 random bits from `secrets`). pantry stores only its sha256: the key
cannot be recovered from the settings, the keys file or a log. A request's key is hashed and looked up in a dict of
hashes (docs/DECISIONS.md, "API keys"); the key's *id* (a short name) is what logs, the audit log and the rate limiter
see, never the key.

Entries come from `PANTRY_API_KEYS` (comma-separated) and from the keys file (one entry per line, `#` comments,
default `<data_dir>/api-keys`). A keys file whose first line is DEMO_MARKER was written by `make demo`: its keys'
plaintext sits in `<data_dir>/demo-keys.env`, so serving refuses them on a non-loopback host (serving/access.py).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

# data scopes (what clients of the API need) and admin roles; `admin` implies ADMIN_IMPLIES, not the data scopes
DATA_SCOPES = ("answers", "ingest", "features")
ADMIN_ROLES = ("merchandiser", "ml_engineer", "admin")
SCOPES = (*DATA_SCOPES, "metrics", *ADMIN_ROLES)
ADMIN_IMPLIES = frozenset({"merchandiser", "ml_engineer", "admin", "metrics"})

DEMO_MARKER = "# pantry demo keys (make demo): not for a server others can reach"
KEY_PREFIX = "pantry_"
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")
MAX_KEY_CHARS = 256  # a longer header is not a key of ours: refused before hashing


class KeyFormatError(ValueError):
    """A key entry that is not `ID:SCOPE+SCOPE:SHA256HEX` with known scopes."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes or ("admin" in self.scopes and scope in ADMIN_IMPLIES)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def entry_line(key_id: str, scopes: list[str] | tuple[str, ...], key: str) -> str:
    """The line to configure `key` (`ID:SCOPE+SCOPE:SHA256HEX`), checked like any configured entry."""
    line = f"{key_id}:{'+'.join(scopes)}:{digest(key)}"
    parse_entry(line)
    return line


def parse_entry(text: str) -> tuple[str, frozenset[str], str]:
    """(key id, scopes, sha256 hex) of one entry; KeyFormatError says what is wrong."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise KeyFormatError(f"API key entry {text.strip()[:80]!r} must be ID:SCOPE+SCOPE:SHA256HEX "
                             "(make one with `pantry keys new`)")
    key_id, scopes_text, hexdigest = parts
    if not _ID.match(key_id):
        raise KeyFormatError(f"API key id {key_id!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    scopes = frozenset(s for s in scopes_text.split("+") if s)
    unknown = sorted(scopes - set(SCOPES))
    if not scopes or unknown:
        raise KeyFormatError(f"API key {key_id!r}: unknown or no scopes {unknown or scopes_text!r} "
                             f"(known: {', '.join(SCOPES)})")
    if not _HEX.match(hexdigest.lower()):
        raise KeyFormatError(f"API key {key_id!r}: {hexdigest[:12]!r}... is not a sha256 hex digest (64 hex digits); "
                             "configure the hash printed by `pantry keys new`, never the key itself")
    return key_id, scopes, hexdigest.lower()


@dataclass
class KeyTable:
    """Configured keys by sha256 hex digest; `demo_files` are the keys files that `make demo` wrote."""

    by_digest: dict[str, ApiKey] = field(default_factory=dict)
    demo_files: list[Path] = field(default_factory=list)

    def add(self, text: str, where: str) -> None:
        try:
            key_id, scopes, hexdigest = parse_entry(text)
        except KeyFormatError as exc:
            raise KeyFormatError(f"{where}: {exc}") from exc
        if any(k.key_id == key_id for k in self.by_digest.values()):
            raise KeyFormatError(f"{where}: API key id {key_id!r} is configured twice (ids name keys in the audit "
                                 "log: give a new key a new id)")
        self.by_digest[hexdigest] = ApiKey(key_id, scopes)

    def lookup(self, key: str) -> ApiKey | None:
        if not key or len(key) > MAX_KEY_CHARS:
            return None
        return self.by_digest.get(digest(key))

    def by_id(self, key_id: str) -> ApiKey | None:
        """The key with this id (ids are unique: `add` refuses a second one)."""
        return next((k for k in self.by_digest.values() if k.key_id == key_id), None)

    def __len__(self) -> int:
        return len(self.by_digest)


def load(entries: tuple[str, ...], keys_file: Path) -> KeyTable:
    """The keys of `entries` (PANTRY_API_KEYS) and of `keys_file` (absent: none from it)."""
    table = KeyTable()
    for text in entries:
        table.add(text, "PANTRY_API_KEYS")
    try:
        lines = keys_file.read_text().splitlines()
    except FileNotFoundError:
        return table
    if lines and lines[0].strip() == DEMO_MARKER:
        table.demo_files.append(keys_file)
    for number, line in enumerate(lines, 1):
        if line.strip() and not line.lstrip().startswith("#"):
            table.add(line, f"{keys_file}:{number}")
    return table


def append_entry(keys_file: Path, line: str) -> None:
    """Add one entry to a keys file (created 0600)."""
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    fd = keys_file.open("a")
    try:
        keys_file.chmod(0o600)
        fd.write(line + "\n")
    finally:
        fd.close()

