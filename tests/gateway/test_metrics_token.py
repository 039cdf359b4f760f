"""GEMMA_FLEET_METRICS_TOKEN: a gateway that sets it answers /metrics (per-team counters) only
to `Authorization: Bearer <token>`, and says so in its OpenAPI document; one that does not
set it keeps /metrics open. Real gateways on loopback ports, configured from the environment
as a Ray Serve replica is (TeamsSettings.from_env, open_gate); team keys on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from gateway_harness import (
    RunningGateway,
    fleet_settings,
    serve_gateway,
    serve_with_metrics_token,
    simulated_pools,
)
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.settings import TeamsSettings

TOKEN = "metrics-" + "m" * 32
ADMIN = "admin-" + "a" * 40
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    """A gateway with team keys, an admin key and a metrics token; and a key of team `search`
    that has been served once (so /metrics carries the team's name)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    env = {
        "GEMMA_FLEET_AUTH": "required",
        "REDIS_URL": server.url,
        "GEMMA_FLEET_ADMIN_KEY": ADMIN,
        "GEMMA_FLEET_METRICS_TOKEN": TOKEN,
    }
    try:
        settings = TeamsSettings.from_env(env)
        with serve_gateway(fleet_settings(), simulated_pools, lambda: open_gate(settings)) as gw:
            admin = {"authorization": f"Bearer {ADMIN}"}
            created = httpx.post(gw.url + "/admin/teams", json={"name": "search"}, headers=admin)
            assert created.status_code == 201, created.text
            issued = httpx.post(
                gw.url + "/admin/teams/search/keys", json={"name": "t"}, headers=admin
            )
            assert issued.status_code == 201, issued.text
            key = str(issued.json()["key"])
            served = gw.post(
                "/v1/chat/completions",
                json={"model": "e2b", "messages": HELLO, "max_tokens": 4},
                headers={"authorization": f"Bearer {key}"},
            )
            assert served.status_code == 200, served.text
            yield gw, key
    finally:
        server.stop()


def _get(gw: RunningGateway, path: str, authorization: str | None = None) -> httpx.Response:
    headers = {"authorization": authorization} if authorization is not None else {}
    return httpx.get(gw.url + path, headers=headers, timeout=30)


def test_metrics_need_the_token_and_say_which(guarded: tuple[RunningGateway, str]) -> None:
    gw, team_key = guarded
    missing = _get(gw, "/metrics")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/json"
    error = missing.json()["error"]
    assert "Authorization: Bearer" in error["message"]
    assert "GEMMA_FLEET_METRICS_TOKEN" in error["message"] and "none was sent" in error["message"]
    assert error["type"] == "authentication_error"
    assert "search" not in missing.text  # no team's counters leak in the refusal
    for wrong in (
        f"Bearer {TOKEN[:-1]}x",  # one character off
        f"Bearer {TOKEN}x",  # longer
        f"Bearer {team_key}",  # a team key is not the metrics token
        f"Bearer {ADMIN}",  # nor is the admin key
        f"Basic {TOKEN}",  # the wrong scheme
        "Bearer",  # the scheme alone
    ):
        refused = _get(gw, "/metrics", wrong)
        assert refused.status_code == 401, wrong
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "GEMMA_FLEET_METRICS_TOKEN" in refused.json()["error"]["message"]
    # The token sent another way (x-api-key, the Anthropic SDKs' header) is not accepted.
    other_header = httpx.get(gw.url + "/metrics", headers={"x-api-key": TOKEN}, timeout=30)
    assert other_header.status_code == 401


def test_the_token_reads_every_teams_counters(guarded: tuple[RunningGateway, str]) -> None:
    gw, _ = guarded
    for scheme in ("Bearer", "bearer"):  # RFC 6750: the scheme is case-insensitive
        reply = _get(gw, "/metrics", f"{scheme} {TOKEN}")
        assert reply.status_code == 200, reply.text
        assert reply.headers["content-type"].startswith("text/plain")
        assert 'team="search"' in reply.text
        assert "gemma_fleet_gateway_requests_total" in reply.text


def test_only_metrics_need_the_token(guarded: tuple[RunningGateway, str]) -> None:
    """Probes and the model list stay open; the API still wants a team key, not the token."""
    gw, _ = guarded
    for path in ("/health", "/ready", "/v1/models"):
        assert _get(gw, path).status_code == 200, path
    chat = gw.post(
        "/v1/chat/completions",
        json={"model": "e2b", "messages": HELLO, "max_tokens": 4},
        headers={"authorization": f"Bearer {TOKEN}"},
    )
    assert chat.status_code == 401


def test_openapi_names_the_metrics_credential(guarded: tuple[RunningGateway, str]) -> None:
    gw, _ = guarded
    document = _get(gw, "/openapi.json").json()
    operation = document["paths"]["/metrics"]["get"]
    assert operation["security"] == [{"metrics": []}]
    assert document["components"]["securitySchemes"]["metrics"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "GEMMA_FLEET_METRICS_TOKEN",
    }
    assert "401" in operation["responses"] and "200" in operation["responses"]


def test_metrics_stay_open_without_a_token(gateway_server: RunningGateway) -> None:
    """The local fleet and every gateway that does not set GEMMA_FLEET_METRICS_TOKEN."""
    reply = _get(gateway_server, "/metrics")
    assert reply.status_code == 200
    assert "gemma_fleet_gateway_requests_total" in reply.text
    # A scraper configured with a token still reads an open gateway.
    assert _get(gateway_server, "/metrics", f"Bearer {TOKEN}").status_code == 200
    document = _get(gateway_server, "/openapi.json").json()
    operation = document["paths"]["/metrics"]["get"]
    assert "security" not in operation and "401" not in operation["responses"]
    assert "metrics" not in document["components"]["securitySchemes"]
    assert "GEMMA_FLEET_METRICS_TOKEN is not set" in operation["description"]


def test_a_short_metrics_token_stops_the_gateway_from_starting() -> None:
    with pytest.raises(ValueError, match="GEMMA_FLEET_METRICS_TOKEN must be at least 24"):
        TeamsSettings.from_env({"GEMMA_FLEET_AUTH": "disabled", "GEMMA_FLEET_METRICS_TOKEN": "x"})


@pytest.mark.parametrize("blank", ["", "\n", "  "])
def test_a_blank_metrics_token_stops_the_gateway_from_starting(blank: str) -> None:
    """An existing Secret whose key is empty gives the pods a blank variable. Read as unset,
    it served every team's counters to anyone while the SRE believed /metrics guarded; the
    gateway refuses to start instead, naming the variable and both ways out."""
    env = {"GEMMA_FLEET_AUTH": "disabled", "GEMMA_FLEET_METRICS_TOKEN": blank}
    with pytest.raises(ValueError) as refused:
        TeamsSettings.from_env(env)
    message = str(refused.value)
    assert "GEMMA_FLEET_METRICS_TOKEN is set but empty" in message
    assert "at least 24 characters" in message and "unset it" in message
    # Unset keeps /metrics open (the local fleet); a blank admin key keeps the admin API off,
    # which opens nothing.
    assert TeamsSettings.from_env({"GEMMA_FLEET_AUTH": "disabled"}).metrics_token is None
    blank_admin = {"GEMMA_FLEET_AUTH": "disabled", "GEMMA_FLEET_ADMIN_KEY": blank}
    assert TeamsSettings.from_env(blank_admin).admin_key is None


@pytest.mark.parametrize("name", ["GEMMA_FLEET_METRICS_TOKEN", "GEMMA_FLEET_ADMIN_KEY"])
@pytest.mark.parametrize("inside", [" ", "\t", "\n", "\x7f", "é"])
def test_a_credential_no_header_can_carry_is_refused_without_quoting_it(
    name: str, inside: str
) -> None:
    """A space, control character or non-ASCII letter inside the value: no client could send
    it in an HTTP header (httpx refuses it; every scrape or admin call would be a 401). The
    error names the variable and why, and does not print the secret."""
    secret = "s" * 16 + inside + "t" * 16
    with pytest.raises(ValueError) as refused:
        TeamsSettings.from_env({"GEMMA_FLEET_AUTH": "disabled", name: secret})
    message = str(refused.value)
    assert name in message and "visible ASCII" in message
    assert "s" * 16 not in message


def test_a_token_without_team_keys_still_guards_metrics() -> None:
    """GEMMA_FLEET_AUTH=disabled (an open API, no Redis) does not open /metrics."""
    with serve_with_metrics_token(TOKEN) as gw:
        assert _get(gw, "/metrics").status_code == 401
        assert _get(gw, "/metrics", f"Bearer {TOKEN}").status_code == 200


def test_a_token_read_with_a_trailing_newline_is_the_token_without_it() -> None:
    """A Secret made from a file (`kubectl create secret generic --from-file`, the file written
    by `echo`) ends its value with a newline, which the pods' GEMMA_FLEET_METRICS_TOKEN keeps.
    An HTTP header cannot carry it, so that token could never be presented: every scrape was a
    401. The token is the value without the whitespace around it."""
    with serve_with_metrics_token(TOKEN + "\n") as gw:
        assert _get(gw, "/metrics", f"Bearer {TOKEN}").status_code == 200
        assert _get(gw, "/metrics", f"Bearer {TOKEN[:-1]}").status_code == 401
