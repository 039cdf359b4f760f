"""Redis killed and restarted under a running gateway: the documented policy holds (docs/teams.md),
the gateway recovers without a restart, and no completed request's accounting is lost. The
module's own redis-server (the `redis_server` fixture is per module) is the one killed."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest
from gateway_harness import (
    RunningGateway,
    fleet_settings,
    serve_gateway,
    simulated_pools,
    within_one_minute,
)
from pdf_files import text_pdf
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.settings import RedisDownPolicy, TeamsSettings

from .conftest import ADMIN, admin

pytestmark = pytest.mark.slow  # kills and restarts Redis, waits on real-time streams


@contextmanager
def gateway_with(redis: RedisServer, policy: RedisDownPolicy) -> Iterator[RunningGateway]:
    settings = TeamsSettings(
        auth_required=True, redis_url=redis.url, admin_key=ADMIN, redis_down=policy
    )
    with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
        yield gw


def team_key(gw: RunningGateway, team: str) -> str:
    admin(gw, "DELETE", f"/admin/teams/{team}")
    assert admin(gw, "POST", "/admin/teams", json={"name": team}).status_code == 201
    return str(admin(gw, "POST", f"/admin/teams/{team}/keys", json={}).json()["key"])


def sdk(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(gw: RunningGateway, key: str) -> Any:
    return sdk(gw, key).chat.completions.create(
        model="e2b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )


def ask_about_a_pdf(gw: RunningGateway, key: str) -> httpx.Response:
    """A chat request with a PDF no other request sends (the gateway keeps the pages of
    PDFs it has read), whatever its answer."""
    pdf = base64.b64encode(text_pdf([f"Report {uuid.uuid4()}"])).decode()
    file = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + pdf}}
    return httpx.post(
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "e2b", "max_tokens": 4, "messages": [{"role": "user", "content": [file]}]},
        timeout=30,
    )


def pending(gw: RunningGateway) -> int:
    assert gw.gate is not None and gw.gate.access is not None
    return gw.gate.access.pending


def wait_for(condition: Any, timeout_s: float = 15) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def requests_metered(gw: RunningGateway, team: str) -> int:
    rows = admin(gw, "GET", f"/admin/usage?team={team}").json()["data"]
    return sum(r["requests"] for r in rows)


def test_fail_closed_answers_503_then_recovers_and_loses_no_usage(
    redis_server: RedisServer,
) -> None:
    with gateway_with(redis_server, RedisDownPolicy.FAIL_CLOSED) as gw:
        key = team_key(gw, "outage")
        ask(gw, key)
        stream = sdk(gw, key).chat.completions.create(
            model="slow",
            messages=[{"role": "user", "content": "a long answer please"}],
            max_tokens=150,
            stream=True,
        )
        chunks = iter(stream)
        next(chunks)  # admitted and streaming: then Redis dies
        redis_server.kill()
        assert len(list(chunks)) > 0  # an admitted stream is finished, not cut

        started = time.monotonic()
        refused = httpx.post(
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "e2b", "messages": [{"role": "user", "content": "x"}]},
            timeout=30,
        )
        assert time.monotonic() - started < 3  # bounded, never a hang
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "Redis" in refused.json()["error"]["message"]
        assert pending(gw) >= 1  # the stream's accounting waits in the buffer
        # Refused at the key check, before its PDF is read (the limits check that would
        # refuse it next is tested with Redis gone in test_access.py).
        pages_read = gw.pdf_pages_read()
        assert ask_about_a_pdf(gw, key).status_code == 503
        assert gw.pdf_pages_read() == pages_read

        redis_server.start()
        assert wait_for(lambda: pending(gw) == 0), "buffered accounting never flushed"
        assert ask(gw, key).choices  # served again, no gateway restart
        assert requests_metered(gw, "outage") == 3  # before, the cut-off stream, after


def test_serve_cached_keys_keeps_known_keys_working_during_an_outage(
    redis_server: RedisServer,
) -> None:
    with gateway_with(redis_server, RedisDownPolicy.SERVE_CACHED_KEYS) as gw:
        known = team_key(gw, "cached")
        stranger = team_key(gw, "stranger")  # valid, but never used before the outage
        ask(gw, known)
        redis_server.kill()
        for _ in range(3):
            assert ask(gw, known).choices
        pdf = ask_about_a_pdf(gw, known)  # checked against limits first, and let through
        assert pdf.status_code == 200, pdf.text
        with pytest.raises(openai.InternalServerError) as refused:
            ask(gw, stranger)
        assert refused.value.status_code == 503
        assert pending(gw) >= 3

        redis_server.start()
        assert wait_for(lambda: pending(gw) == 0), "buffered accounting never flushed"
        assert requests_metered(gw, "cached") == 5
        assert ask(gw, stranger).choices


def test_counting_tokens_follows_the_policy_during_an_outage(redis_server: RedisServer) -> None:
    import anthropic
    from anthropic.types import MessageParam

    with gateway_with(redis_server, RedisDownPolicy.SERVE_CACHED_KEYS) as gw:
        key = team_key(gw, "counting")
        limits = {"limits": {"requests_per_minute": 1}}
        assert admin(gw, "PATCH", "/admin/teams/counting", json=limits).status_code == 200
        client = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)
        hello: list[MessageParam] = [{"role": "user", "content": "hi"}]
        within_one_minute()  # both counts below
        client.messages.count_tokens(model="e2b", messages=hello)  # the minute's one
        with pytest.raises(anthropic.RateLimitError):
            client.messages.count_tokens(model="e2b", messages=hello)
        redis_server.kill()
        try:
            # A known key keeps working without limits, as its generations do.
            assert client.messages.count_tokens(model="e2b", messages=hello).input_tokens > 0
        finally:
            redis_server.start()
