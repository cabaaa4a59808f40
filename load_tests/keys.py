"""The API keys the load tests and the bench send.

Against a running pantry: the keys of the settings (PANTRY_CLIENT_KEY for answers, PANTRY_INGEST_KEY for
/v1/events, PANTRY_FEATURES_KEY for /v1/features; `source .pantry/demo-keys.env` sets all three). For a pantry these
tools start themselves: one random key with the three data scopes, made for the run (`with_run_key`), configured in
the server's PANTRY_API_KEYS and sent by the clients; it is never written to disk.
"""

from __future__ import annotations

import secrets

import msgspec

from pantry import apikeys
from pantry.settings import Settings


class MissingKey(RuntimeError):
    pass


def with_run_key(settings: Settings) -> Settings:
    """These settings plus one fresh key for answers, ingest and features (server entry and client side)."""
    key = apikeys.new_key()
    entry = apikeys.entry_line(f"load-{secrets.token_hex(3)}", apikeys.DATA_SCOPES, key)
    return msgspec.structs.replace(settings, api_keys=(*settings.api_keys, entry), client_key=key, ingest_key=key,
                                   features_key=key)


def key_for(settings: Settings, path: str) -> str:
    """The key to send to `path`; MissingKey says which setting is unset."""
    if path.startswith("/v1/events"):
        key, name = settings.ingest_key, "PANTRY_INGEST_KEY"
    elif path.startswith(("/v1/features", "/get-online-features")):
        key, name = settings.features_key, "PANTRY_FEATURES_KEY"
    else:
        key, name = settings.client_key, "PANTRY_CLIENT_KEY"
    if not key:
        raise MissingKey(f"{path} needs an API key: set {name} (`source .pantry/demo-keys.env` after `make demo`)")
    return key


def headers_for(settings: Settings, path: str) -> dict[str, str]:
    return {"X-API-Key": key_for(settings, path)}
