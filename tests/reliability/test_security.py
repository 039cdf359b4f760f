"""Security properties a client or an operator could check from outside: no credential in any
log line, the admin credential compared in constant time, team and admin credentials kept
apart on every route, bodies bounded in size and in time, security headers on every answer,
and key secrets absent from Redis. (Covered elsewhere, not repeated here: 401 for missing and
bad keys, a team key refused on five admin routes, the admin key refused as a team key, in
tests/teams/test_api_teams.py; the chart's pods non-root with read-only root filesystems, in
tests/helm/test_chart_render.py.)"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from typing import Any, cast

import pytest
import redis as sync_redis

import gemma_fleet.gateway.auth as auth_module
from gemma_fleet.gateway.app import SECURITY_HEADERS
from gemma_fleet.gateway.openapi import OPERATIONS
from gemma_fleet.teams.keys import key_digest

from .conftest import ADMIN_KEY, BODY_TIMEOUT_S, CHAT, Fleet

CHAT_BODY = {"model": "gemma-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
WRONG_KEY = "gfk_aaaaaaaaaaaa_" + "Q" * 43  # well formed, never issued: a user's typo is secret too


def secret_part(key: str) -> str:
    """The part of `gfk_<id>_<secret>` after the public id (the whole of any other key)."""
    return key.split("_", 2)[2] if key.startswith("gfk_") else key


def concrete(path: str) -> str:
    return path.replace("{name}", "reliability").replace("{key_id}", "aaaaaaaaaaaa")


def test_no_credential_appears_in_any_log_line(
    fleet: Fleet, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    access = logging.getLogger("uvicorn.access")
    access_level = access.level
    access.setLevel(logging.INFO)  # the access log too, which the harness keeps quiet
    caplog.set_level(logging.DEBUG)
    try:
        issued = fleet.admin_call("POST", "/admin/teams/reliability/keys", json={"name": "logs"})
        assert issued.status_code == 201
        new_key = issued.json()["key"]
        calls: list[tuple[str, str, str | None, dict[str, Any]]] = [
            ("POST", CHAT, fleet.key, {"json": CHAT_BODY}),
            ("POST", CHAT, new_key, {"json": {**CHAT_BODY, "stream": True}}),
            ("POST", CHAT, WRONG_KEY, {"json": CHAT_BODY}),
            ("POST", CHAT, ADMIN_KEY, {"json": CHAT_BODY}),
            ("POST", CHAT, fleet.key, {"json": {"model": "gemma-4"}}),
            ("POST", "/v1/messages", new_key, {"json": {"model": "x"}}),
            ("GET", "/v1/usage", fleet.key, {}),
            ("GET", "/admin/teams", fleet.key, {}),
            ("GET", "/admin/teams", WRONG_KEY, {}),
            ("GET", "/admin/teams", ADMIN_KEY, {}),
            ("GET", "/admin/teams/reliability/keys", ADMIN_KEY, {}),
            ("GET", "/admin/usage", ADMIN_KEY, {}),
        ]
        for method, path, key, kw in calls:
            assert fleet.call(method, path, key, **kw).status_code < 500
        # x-api-key, as Anthropic SDKs send it
        fleet.call("POST", "/v1/messages", headers={"x-api-key": new_key}, json={"model": "x"})
        time.sleep(0.3)  # let the server thread write its last lines
    finally:
        access.setLevel(access_level)
    out, err = capfd.readouterr()
    logged = "\n".join(
        [
            out,
            err,
            *(r.getMessage() for r in caplog.records),
            *(str(r.args) for r in caplog.records),
        ]
    )
    assert "POST /v1/chat/completions" in logged  # the capture did see the traffic
    for secret in (fleet.key, new_key, WRONG_KEY, ADMIN_KEY):
        assert secret not in logged
        assert secret_part(secret) not in logged  # nor the secret part alone


def test_admin_credential_is_compared_in_constant_time(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[bytes, bytes]] = []

    class Spy:
        @staticmethod
        def compare_digest(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return hmac.compare_digest(a, b)

    monkeypatch.setattr(auth_module, "hmac", Spy)
    near_miss = ADMIN_KEY[:-1] + "x"  # same length, last character wrong
    for presented, status in [(near_miss, 401), ("short", 401), (ADMIN_KEY, 200)]:
        assert fleet.call("GET", "/admin/teams", presented).status_code == status
    assert calls == [
        (near_miss.encode(), ADMIN_KEY.encode()),
        (b"short", ADMIN_KEY.encode()),
        (ADMIN_KEY.encode(), ADMIN_KEY.encode()),
    ]


ADMIN_OPS = [(m, p) for (m, p), op in OPERATIONS.items() if op.credential == "admin"]
TEAM_OPS = [(m, p) for (m, p), op in OPERATIONS.items() if op.credential == "team"]


@pytest.mark.parametrize(("method", "path"), ADMIN_OPS, ids=[f"{m} {p}" for m, p in ADMIN_OPS])
def test_every_admin_route_refuses_team_keys_and_no_key(
    fleet: Fleet, method: str, path: str
) -> None:
    for key in (fleet.key, None, WRONG_KEY):
        r = fleet.call(method.upper(), concrete(path), key, json={"name": "intruder"})
        assert r.status_code == 401, (key, r.text)
        assert r.json()["error"]["type"] == "authentication_error"
    assert fleet.admin_call("GET", "/admin/teams/reliability").status_code == 200  # unchanged


@pytest.mark.parametrize(("method", "path"), TEAM_OPS, ids=[f"{m} {p}" for m, p in TEAM_OPS])
def test_every_team_route_refuses_the_admin_key_and_no_key(
    fleet: Fleet, method: str, path: str
) -> None:
    for key in (ADMIN_KEY, None):
        r = fleet.call(method.upper(), path, key, json=CHAT_BODY)
        assert r.status_code == 401, (key, r.text)


def test_admin_bodies_have_their_own_small_limit(fleet: Fleet) -> None:
    big = {"name": "big", "allowed_models": ["m" * 1000] * 2000}  # ~2 MB > the 1 MiB admin limit
    r = fleet.admin_call("POST", "/admin/teams", json=big)
    assert r.status_code == 413, r.text
    assert "exceeds" in r.json()["error"]["message"]


def _slow_post(port: int, key: str, pause_s: float, give_up_s: float) -> tuple[bytes, float]:
    """POST a 1,000-byte body one byte every `pause_s`; what came back and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
            + f"authorization: Bearer {key}\r\n".encode()
            + b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{"
        )
        s.settimeout(pause_s)
        while time.monotonic() - started < give_up_s:
            try:
                first = s.recv(65536)
            except TimeoutError:
                try:
                    s.sendall(b" ")
                    continue
                except OSError:  # the server closed after answering
                    s.settimeout(give_up_s)
                    first = s.recv(65536)
            after = time.monotonic() - started
            return _rest_of_answer(s, first, give_up_s), after
    return b"", time.monotonic() - started


def _rest_of_answer(s: socket.socket, first: bytes, give_up_s: float) -> bytes:
    """`first` completed to the whole answer: the head and content-length bytes of body. The
    server may send head and body in separate segments, so one recv can end at the head."""
    if not first:
        return first
    s.settimeout(give_up_s)
    answer = first
    while b"\r\n\r\n" not in answer and (chunk := s.recv(65536)):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length and (chunk := s.recv(65536)):
        body += chunk
    return head + b"\r\n\r\n" + body


def test_a_body_sent_slowly_gets_408_and_holds_no_worker(fleet: Fleet) -> None:
    port = int(fleet.url.rsplit(":", 1)[1])
    result: dict[str, Any] = {}

    def send_slowly() -> None:
        result["answer"], result["after"] = _slow_post(port, fleet.key, 0.2, 15)

    slow = threading.Thread(target=send_slowly)
    slow.start()
    time.sleep(0.5)
    fleet.assert_still_serves()  # served while the slow body is still trickling in
    slow.join(20)
    answer, after = result["answer"], result["after"]
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"not received within" in answer
    assert BODY_TIMEOUT_S <= after < BODY_TIMEOUT_S + 3
    fleet.assert_still_serves()


def test_security_headers_on_every_answer(fleet: Fleet) -> None:
    created = fleet.admin_call("POST", "/admin/teams", json={"name": "headers"})
    answers = {
        "chat 200": fleet.team_call("POST", CHAT, json=CHAT_BODY),
        "stream 200": fleet.team_call("POST", CHAT, json={**CHAT_BODY, "stream": True}),
        "messages 200": fleet.team_call("POST", "/v1/messages", json={**CHAT_BODY, "model": "e2b"}),
        "messages 400": fleet.team_call("POST", "/v1/messages", json={"model": "x"}),
        "400": fleet.team_call("POST", CHAT, json={"model": "gemma-4"}),
        "401": fleet.call("POST", CHAT, json=CHAT_BODY),
        "404 model": fleet.team_call("POST", CHAT, json={**CHAT_BODY, "model": "nope"}),
        "404 route": fleet.call("GET", "/no/such/route"),
        "405": fleet.call("PUT", CHAT),
        "413": fleet.admin_call("POST", "/admin/teams", json={"name": "x" * (2 * 2**20)}),
        "415": fleet.team_call("POST", CHAT, content=b"{}"),
        "models": fleet.call("GET", "/v1/models"),
        "metrics": fleet.call("GET", "/metrics"),
        "health": fleet.call("GET", "/health"),
        "openapi": fleet.call("GET", "/openapi.json"),
        "admin 201": created,
        "admin 204": fleet.admin_call("DELETE", "/admin/teams/headers"),
        "admin 404": fleet.admin_call("GET", "/admin/teams/headers"),
        "usage": fleet.team_call("GET", "/v1/usage"),
    }
    for what, r in answers.items():
        assert r.status_code < 500, (what, r.status_code)
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (what, name, dict(r.headers))
    assert answers["404 route"].json()["error"]["type"] == "not_found_error"
    not_allowed = answers["405"].json()["error"]["message"]
    assert not_allowed.startswith(f"PUT {CHAT} is not served here: this path takes POST;")


def test_key_secrets_are_stored_only_as_digests(fleet: Fleet) -> None:
    """Every Redis key and value of every type, after the key was issued and used: the digest
    is there (so the store does hold the key), the secret nowhere."""
    issued = fleet.admin_call("POST", "/admin/teams/reliability/keys", json={"name": "at-rest"})
    key = issued.json()["key"]
    assert fleet.call("POST", CHAT, key, json=CHAT_BODY).status_code == 200
    assert fleet.call("GET", "/v1/usage", key).status_code == 200
    r = sync_redis.Redis.from_url(fleet.redis.url)
    dump: list[bytes] = []
    # Without decode_responses every reply is bytes; redis-py's types allow str as well.
    for name in r.scan_iter(count=1000):
        dump.append(name)
        kind = r.type(name)
        if kind == b"string":
            dump.append(cast(bytes | None, r.get(name)) or b"")
        elif kind == b"hash":
            dump.extend(b for kv in cast(dict[bytes, bytes], r.hgetall(name)).items() for b in kv)
        elif kind == b"set":
            dump.extend(cast(set[bytes], r.smembers(name)))
        elif kind == b"zset":
            scored = cast(list[tuple[bytes, float]], r.zrange(name, 0, -1, withscores=True))
            dump.extend(m for m, _ in scored)
        elif kind == b"list":
            dump.extend(cast(list[bytes], r.lrange(name, 0, -1)))
    everything = b"\n".join(dump)
    assert key_digest(key).encode() in everything
    for secret in (key, secret_part(key), secret_part(fleet.key), ADMIN_KEY):
        assert secret.encode() not in everything
