"""API keys and scopes on the real server: every /v1 and /admin route needs a key (401 without one or with an unknown
one, 403 with a key lacking the scope, bodies naming the scope), both header forms, no keys configured, the route
table check that covers routes added later, demo keys refused on a non-loopback host, the key CLIs."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from pantry import apikeys
from pantry.redis_server import free_port, sync_client
from pantry.settings import SettingsError, from_env, subprocess_env
from serving.access import ANY_KEY, ROUTE_SCOPES, check_routes, template_of
from serving.app import create_app

ROLES_OF_SCOPE = {"answers": {"client", "data"}, "ingest": {"ingest", "data"}, "features": {"features", "data"},
                  "metrics": {"metrics", "data", "admin"}, "merchandiser": {"merchandiser", "admin"},
                  "ml_engineer": {"ml_engineer", "admin"}, "admin": {"admin"}}
# path parameters that reach the handler but change nothing (unknown campaign / model -> 404)
PARAMS = {"campaign_id": "999999", "name": "nope", "path": "x", "customer_id": "999999999",
          "experiment_id": "exp-nope", "file_path": "console.css"}


def _routes(settings) -> list[tuple[str, str, str | None]]:
    """(method, concrete path, scope) of every route of the app, OPTIONS and HEAD aside."""
    app = create_app(settings)
    out = []
    for route in app.routes:
        path = re.sub(r"\{(\w+):\w+\}", lambda m: PARAMS[m.group(1)], route.path)
        for method in sorted(getattr(route, "methods", ())):
            if method not in ("OPTIONS", "HEAD"):
                out.append((method, path, app.state.route_scopes[template_of(route.path)]))
    return out


def _call(http, method: str, path: str, headers: dict[str, str] | None = None):
    body = {"json": {}} if method == "POST" else {}
    return http.request(method, path, headers=headers or {}, **body)


def test_every_v1_and_admin_route_needs_a_key_with_its_scope(http, api, api_keys, feast_applied):
    routes = _routes(feast_applied)
    protected = [r for r in routes if r[1].startswith(("/v1/", "/admin/"))]
    assert len(protected) >= 11
    assert all(scope is not None for _, _, scope in protected)
    for method, path, scope in routes:
        if scope is None:
            continue
        anonymous = _call(http, method, path, headers={"X-API-Key": ""})
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        needs = "any configured key" if scope == ANY_KEY else f"scope `{scope}`"
        assert needs in anonymous.json()["detail"] and "X-API-Key" in anonymous.json()["detail"]
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        unknown = _call(http, method, path, headers={"X-API-Key": apikeys.new_key()})
        assert unknown.status_code == 401 and "unknown API key" in unknown.json()["detail"], (method, path)
        for role in api_keys.ROLES:
            answer = _call(http, method, path, headers=api_keys.headers(role))
            if scope == ANY_KEY or role in ROLES_OF_SCOPE[scope]:
                assert answer.status_code not in (401, 403), (method, path, role, answer.text)
            else:
                assert answer.status_code == 403, (method, path, role, answer.text)
                detail = answer.json()["detail"]
                assert f"`{scope}` scope" in detail and f"key `test-{role}`" in detail, detail


def _http11(sock: socket.socket, request: bytes, body: bytes = b"", body_after_s: float = 0.0) -> int:
    """Send one HTTP/1.1 request on `sock` (its body in a second write after `body_after_s`) and read the response:
    its status (0 when the server closed the connection instead of answering)."""
    sock.sendall(request)
    if body:
        time.sleep(body_after_s)
        sock.sendall(body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return 0
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return 0
        rest += chunk
    return int(head.split()[1])


def test_a_refused_post_keeps_its_keep_alive_connection_usable(api, api_keys):
    """A 403 to a POST whose body comes after its headers (as httpx sends them: two writes) must not cost the client
    its next request on the same connection."""
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for _ in range(5):
            refused = _http11(sock, b"POST /admin/experiments HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                                    b"\r\nContent-Length: 2\r\nX-API-Key: " + api_keys.client.encode() + b"\r\n\r\n",
                              b"{}", body_after_s=0.05)
            assert refused == 403
            assert _http11(sock, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n") == 200


def test_open_routes_need_no_key(http, api):
    for path in ("/healthz", "/readyz", "/schema/openapi.json"):
        assert http.get(path, headers={"X-API-Key": ""}).status_code in (200, 503), path


def test_bearer_and_x_api_key_are_both_accepted(http, api, api_keys):
    body = {"customer_id": 1, "k": 2}
    key = api_keys.client
    assert http.post("/v1/recommendations", json=body, headers={"X-API-Key": key}).status_code == 200
    assert http.post("/v1/recommendations", json=body, headers={"X-API-Key": "",
                                                                "Authorization": f"Bearer {key}"}).status_code == 200
    assert http.post("/v1/recommendations", json=body, headers={"X-API-Key": "",
                                                                "Authorization": f"Basic {key}"}).status_code == 401
    # the key must be the whole key: its hash (what the server stores) is not a key
    assert http.post("/v1/recommendations", json=body,
                     headers={"X-API-Key": apikeys.digest(key)}).status_code == 401


def test_a_route_missing_from_the_scope_map_stops_the_app(feast_applied):
    @get("/v1/unmapped")
    async def unmapped() -> str:
        return "open by accident?"

    @get("/v1/clock", opt={"scope": "answers"})
    async def clock() -> str:
        return "now"

    with pytest.raises(LookupError, match="/v1/unmapped"):
        check_routes(Litestar(route_handlers=[unmapped]), feast_applied)
    assert check_routes(Litestar(route_handlers=[clock]), feast_applied)["/v1/clock"] == "answers"  # opt wins
    assert ROUTE_SCOPES["/admin/customers"] == "admin"  # erasure routes are mapped ahead of time


async def test_no_keys_configured_means_every_protected_route_is_401(feast_applied, tmp_path, api_keys):
    bare = msgspec.structs.replace(feast_applied, api_keys=(), api_keys_file=tmp_path / "none")
    async with AsyncTestClient(app=create_app(bare), timeout=10) as client:
        response = await client.post("/v1/recommendations", json={"customer_id": 1},
                                     headers=api_keys.headers("data"))
        assert response.status_code == 401
        assert "no API keys are configured" in response.json()["detail"]
        assert (await client.get("/healthz")).status_code == 200


def test_settings_have_no_built_in_keys_and_check_entries():
    assert from_env({}).api_keys == ()
    line = apikeys.entry_line("shop", ["answers", "ingest"], "pantry_x")
    assert from_env({"PANTRY_API_KEYS": line}).api_keys == (line,)
    for bad in ("k1:merchandiser", f"shop:answers:{'0' * 63}", f"shop:bogus:{'0' * 64}", f"s p:answers:{'0' * 64}"):
        with pytest.raises(SettingsError):
            from_env({"PANTRY_API_KEYS": bad})
    with pytest.raises(apikeys.KeyFormatError, match="twice"):
        apikeys.load((line, line), Path("/nonexistent"))


def _pantry(settings, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pantry.cli", *args], env={**subprocess_env(settings), **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_keys_new_prints_the_key_once_and_its_entry(feast_applied, tmp_path):
    keys_file = tmp_path / "keys"
    result = _pantry(feast_applied, "keys", "new", "--id", "shop-web", "--scopes", "answers,ingest", "--append",
                     env={"PANTRY_API_KEYS_FILE": str(keys_file)})
    assert result.returncode == 0, result.stderr
    key = re.search(r"key \(shown once.*\): (\S+)", result.stdout).group(1)
    table = apikeys.load((), keys_file)
    assert table.lookup(key) == apikeys.ApiKey("shop-web", frozenset({"answers", "ingest"}))
    assert key not in keys_file.read_text()
    assert stat.S_IMODE(keys_file.stat().st_mode) == 0o600
    again = _pantry(feast_applied, "keys", "new", "--id", "shop-web", "--scopes", "answers", "--append",
                    env={"PANTRY_API_KEYS_FILE": str(keys_file)})
    assert again.returncode != 0 and "already has a key 'shop-web'" in again.stderr
    bad = _pantry(feast_applied, "keys", "new", "--id", "x", "--scopes", "answers,root")
    assert bad.returncode != 0 and "unknown or no scopes" in bad.stderr


def test_demo_keys_are_made_once_and_refused_on_a_non_loopback_host(feast_applied, tmp_path):
    from pantry.demo import DEMO_KEYS, demo_keys_env, ensure_demo_keys

    own = msgspec.structs.replace(feast_applied, data_dir=tmp_path / "data", api_keys=())
    made = ensure_demo_keys(own)
    assert set(made) == {var for var, _, _ in DEMO_KEYS} and len(set(made.values())) == len(DEMO_KEYS)
    env_file = demo_keys_env(own)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(own.api_keys_path.stat().st_mode) == 0o600
    assert ensure_demo_keys(own) == made  # reused on the next run
    assert f"PANTRY_ADMIN_KEY={made['PANTRY_ADMIN_KEY']}\n" in env_file.read_text()
    table = apikeys.load((), own.api_keys_path)
    assert table.lookup(made["PANTRY_CLIENT_KEY"]).scopes == {"answers"} and table.demo_files

    env = {"PANTRY_DATA_DIR": str(own.data_dir), "PANTRY_HOST": "0.0.0.0", "PANTRY_PORT": str(free_port()),
           "PANTRY_API_KEYS": ""}
    refused = _pantry(own, "serve", "--workers", "1", env=env)
    assert refused.returncode != 0
    assert "refusing to serve on 0.0.0.0" in refused.stderr and "PANTRY_ALLOW_DEMO_KEYS=1" in refused.stderr
    assert "pantry keys new" in refused.stderr


def test_audit_export_writes_every_entry_as_json_lines(http, api, api_keys, feast_applied, tmp_path):
    assert http.post("/admin/campaigns/999999/approve", headers=api_keys.headers("merchandiser")).status_code == 404
    cid = http.get("/admin/campaigns", headers=api_keys.headers("merchandiser")).json()[0]["campaign_id"]
    assert http.post(f"/admin/campaigns/{cid}/reject", headers=api_keys.headers("admin")).status_code == 200
    out = tmp_path / "audit.jsonl"
    result = _pantry(feast_applied, "audit", "export", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [msgspec.json.decode(line) for line in out.read_bytes().splitlines()]
    assert len(lines) == sync_client(feast_applied).xlen("pantry:audit")
    assert lines[-1]["actor"] == "test-admin" and lines[-1]["action"] == "campaign.reject"
    assert lines[-1]["target"] == f"campaign:{cid}" and lines[-1]["id"]
    for key in api_keys.keys.values():  # ids attribute actions; no key text is ever stored
        assert key not in out.read_text()
    # a 404 (unknown campaign) changed nothing and is not an admin action
    assert not [e for e in lines if e["target"] == "campaign:999999"]



def test_loopback_hosts_and_the_demo_key_override(feast_applied, tmp_path):
    from pantry.demo import ensure_demo_keys
    from serving.access import DemoKeysRefused, is_loopback, load_keys

    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.1.2.3", "pantry.example"))
    own = msgspec.structs.replace(feast_applied, data_dir=tmp_path / "data", api_keys=())
    ensure_demo_keys(own)
    assert len(load_keys(own, "127.0.0.1")) == 6
    with pytest.raises(DemoKeysRefused, match=re.escape("refusing to serve on 10.1.2.3")):
        load_keys(own, "10.1.2.3")
    assert len(load_keys(msgspec.structs.replace(own, allow_demo_keys=True), "10.1.2.3")) == 6


def test_admin_implies_the_admin_roles_and_metrics_not_the_data_scopes():
    admin = apikeys.ApiKey("ops", frozenset({"admin"}))
    assert all(admin.has(s) for s in ("admin", "merchandiser", "ml_engineer", "metrics"))
    assert not any(admin.has(s) for s in apikeys.DATA_SCOPES)
    assert not apikeys.ApiKey("m", frozenset({"merchandiser"})).has("ml_engineer")


def test_log_lines_written_while_a_request_is_handled_carry_its_request_id():
    import contextvars
    import logging

    from serving import request_id

    record = logging.LogRecord("pantry.serving", logging.INFO, __file__, 1, "hello", None, None)
    request_id.RequestIdFilter().filter(record)
    assert record.request_id == "-"  # outside a request
    scope = {"headers": [(b"x-request-id", b"abc-123")]}
    context = contextvars.copy_context()
    assert context.run(request_id.of_scope, scope) == "abc-123"
    context.run(request_id.RequestIdFilter().filter, record)
    assert record.request_id == "abc-123"
