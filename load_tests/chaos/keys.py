"""The API keys the harness sends, from one place: `<data dir>/demo-keys.env` (or `.pantry/demo-keys.env`) lines
`PANTRY_CLIENT_KEY=` (answers) and `PANTRY_INGEST_KEY=` (events) when the file exists; else no header."""

from __future__ import annotations

from pantry.settings import ROOT, Settings


def _read(settings: Settings) -> dict[str, str]:
    for path in (settings.data_dir / "demo-keys.env", ROOT / ".pantry" / "demo-keys.env"):
        if path.exists():
            pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
            return {k.strip(): v.strip().strip('"').strip("'") for k, v in pairs}
    return {}


def client_headers(settings: Settings) -> dict[str, str]:
    key = _read(settings).get("PANTRY_CLIENT_KEY")
    return {"X-API-Key": key} if key else {}


def ingest_headers(settings: Settings) -> dict[str, str]:
    key = _read(settings).get("PANTRY_INGEST_KEY")
    return {"X-API-Key": key} if key else {}
