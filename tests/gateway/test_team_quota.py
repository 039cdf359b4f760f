"""What n, count_tokens and PDFs cost a team: a real redis-server, team keys required, the
official SDKs against simulated pools. Admission reserves the prompt plus n x max_tokens; the
charge is the engine's usage over every choice; counting tokens authenticates and spends only
counting requests of its own; a team over its limits is refused before its PDF is fetched or
read. A loopback HTTP server, allowed by the media policy, plays the host of PDFs."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import anthropic
import httpx
import openai
import pytest
from anthropic.types import MessageParam
from gateway_harness import (
    RunningGateway,
    anthropic_error_body,
    fleet_settings,
    serve_gateway,
    simulated_pools,
    within_one_minute,
)
from openai.types.chat import ChatCompletionMessageParam
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from pdf_files import text_pdf
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.limits import Limiter, TeamLimits
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.settings import TeamsSettings

ADMIN = "admin-" + "q" * 40
CHAT_HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


class PdfHost(BaseHTTPRequestHandler):
    """Serves a two-page PDF of its own for each path: the gateway keeps the pages of PDFs it
    has read, and one test's reading must not answer another's."""

    fetched: ClassVar[list[str]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        PdfHost.fetched.append(self.path)
        report = text_pdf([f"Harvest of 2026 ({self.path})", "Pears: 12 tonnes"])
        self.send_response(200)
        self.send_header("content-type", "application/pdf")
        self.send_header("content-length", str(len(report)))
        self.end_headers()
        self.wfile.write(report)


@pytest.fixture(scope="module")
def pdf_host() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), PdfHost)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        teams = TeamsSettings(auth_required=True, redis_url=server.url, admin_key=ADMIN)
        settings = fleet_settings(media={"allowed_networks": ["127.0.0.1/32"]})
        with serve_gateway(settings, simulated_pools, lambda: open_gate(teams)) as running:
            yield running
    finally:
        server.stop()


def admin(gw: RunningGateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {ADMIN}"}
    return httpx.request(method, gw.url + path, headers=headers, timeout=30, **kwargs)


def new_team(gw: RunningGateway, name: str, **spec: Any) -> str:
    """Create a team and return a fresh key for it."""
    created = admin(gw, "POST", "/admin/teams", json={"name": name, **spec})
    assert created.status_code == 201, created.text
    issued = admin(gw, "POST", f"/admin/teams/{name}/keys", json={"name": "test"})
    assert issued.status_code == 201, issued.text
    return str(issued.json()["key"])


def budget_used(gw: RunningGateway, team: str) -> int:
    """The team's spent monthly budget, read straight from Redis once the gateway's
    accounting (which runs after the answer) has landed."""
    assert gw.gate is not None and gw.gate.access is not None
    url = gw.gate.access.settings.redis_url
    assert url is not None

    async def read() -> int:
        redis = connect(url.get_secret_value())
        try:
            return int(await Limiter(redis).budget_used(team, TeamLimits(budget_period="month")))
        finally:
            await redis.aclose()

    time.sleep(0.2)  # a stream is settled by a task of its own when it ends
    return asyncio.run(read())


def openai_client(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def anthropic_client(gw: RunningGateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_admission_reserves_n_times_max_tokens(gateway: RunningGateway) -> None:
    key = new_team(gateway, "n-reserve", limits={"token_budget": 1_000, "budget_period": "month"})
    client = openai_client(gateway, key)
    # 4 x 300 output tokens cannot fit a 1,000-token budget, whatever the prompt: refused for
    # good before any pool is asked, although one choice of 300 would fit.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="e2b", messages=CHAT_HELLO, n=4, max_tokens=300)
    assert refused.value.code == "request_too_large"
    assert "n choices" in refused.value.message and "lower max_tokens or n" in refused.value.message
    assert budget_used(gateway, "n-reserve") == 0
    served = client.chat.completions.create(model="e2b", messages=CHAT_HELLO, n=3, max_tokens=300)
    assert len(served.choices) == 3  # 3 x 300 and the prompt fit


@pytest.mark.parametrize("stream", [False, True])
def test_the_charge_is_every_choices_tokens(gateway: RunningGateway, stream: bool) -> None:
    team = f"n-charge-{str(stream).lower()}"
    key = new_team(gateway, team, limits={"token_budget": 1_000_000})
    client = openai_client(gateway, key)
    body: CompletionCreateParamsBase = {
        "model": "e4b",
        "messages": CHAT_HELLO,
        "n": 3,
        "seed": 8,
        "max_tokens": 64,
    }
    if stream:
        # Usage not asked for: the gateway reads the engine's usage chunk and keeps it back.
        chunks = list(client.chat.completions.create(**body, stream=True))
        assert all(c.usage is None for c in chunks)
        assert {c.choices[0].index for c in chunks if c.choices} == {0, 1, 2}
    answer = client.chat.completions.create(**body)  # the same choices (same seed)
    assert answer.usage is not None
    one_choice: CompletionCreateParamsBase = {**body, "n": 1}
    one = client.chat.completions.create(**one_choice)
    assert one.usage is not None and answer.usage.completion_tokens > one.usage.completion_tokens
    spent = answer.usage.total_tokens * (2 if stream else 1) + one.usage.total_tokens
    assert budget_used(gateway, team) == spent


def test_count_tokens_needs_a_key_of_a_team_allowed_the_model(gateway: RunningGateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as no_key:
        anthropic_client(gateway, "gfk_" + "0" * 40).messages.count_tokens(
            model="e2b", messages=HELLO
        )
    assert no_key.value.status_code == 401
    assert anthropic_error_body(no_key.value)["type"] == "error"
    assert anthropic_error_body(no_key.value)["error"]["type"] == "authentication_error"
    key = new_team(gateway, "count-allowed", allowed_models=["e2b"])
    client = anthropic_client(gateway, key)
    assert client.messages.count_tokens(model="e2b", messages=HELLO).input_tokens > 0
    with pytest.raises(anthropic.PermissionDeniedError) as other_model:
        client.messages.count_tokens(model="e4b", messages=HELLO)
    assert anthropic_error_body(other_model.value)["error"]["type"] == "permission_error"


def test_count_tokens_spends_no_request_and_no_token(gateway: RunningGateway) -> None:
    limits = {"requests_per_minute": 1, "token_budget": 10_000, "budget_period": "month"}
    key = new_team(gateway, "count-free", limits=limits)
    client = anthropic_client(gateway, key)
    within_one_minute()  # the requests below
    count = client.messages.count_tokens(model="e2b", messages=HELLO)  # the minute's one count
    assert budget_used(gateway, "count-free") == 0
    created = client.messages.create(model="e2b", max_tokens=8, messages=HELLO)  # the minute's one
    assert count.input_tokens == created.usage.input_tokens
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="e2b", max_tokens=8, messages=HELLO)
    # Counting has a requests-per-minute counter of its own (docs/teams.md): spent by counting,
    # not by generations, and the other way round.
    with pytest.raises(anthropic.RateLimitError) as counting:
        client.messages.count_tokens(model="e2b", messages=HELLO)
    assert "token counting" in anthropic_error_body(counting.value)["error"]["message"]
    used = created.usage.input_tokens + created.usage.output_tokens
    assert budget_used(gateway, "count-free") == used
    rows = admin(gateway, "GET", "/admin/usage?team=count-free").json()["data"]
    assert sum(r["requests"] for r in rows) == 1  # metered: the one generation only


def test_responses_are_limited_and_metered_and_counting_shares_the_count_counter(
    gateway: RunningGateway,
) -> None:
    """/v1/responses spends the team's requests and tokens like chat; input_tokens spends
    neither, and shares count_tokens' own requests-per-minute counter."""
    limits = {"requests_per_minute": 1, "token_budget": 10_000, "budget_period": "month"}
    key = new_team(gateway, "responses", limits=limits)
    client = openai_client(gateway, key)
    within_one_minute()  # the requests below
    count = client.responses.input_tokens.count(model="e2b", input="hello")  # the one count
    created = client.responses.create(model="e2b", input="hello", max_output_tokens=8)
    assert created.usage is not None and count.input_tokens == created.usage.input_tokens
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="e2b", input="hello", max_output_tokens=8)
    with pytest.raises(anthropic.RateLimitError):  # the same counter, spent by input_tokens
        anthropic_client(gateway, key).messages.count_tokens(model="e2b", messages=HELLO)
    used = created.usage.input_tokens + created.usage.output_tokens
    assert budget_used(gateway, "responses") == used
    rows = admin(gateway, "GET", "/admin/usage?team=responses").json()["data"]
    assert sum(r["requests"] for r in rows) == 1


def test_admission_reserves_every_prompt_of_a_batch_and_its_sequences(
    gateway: RunningGateway,
) -> None:
    key = new_team(gateway, "batch", limits={"token_budget": 1_000, "budget_period": "month"})
    client = openai_client(gateway, key)
    # 2 prompts x n=2 x 300 output tokens cannot fit 1,000 tokens; one prompt's 2 x 300 would
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(
            model="e2b", prompt=["Once", "Twice"], n=2, max_tokens=300, temperature=1.0
        )
    assert refused.value.code == "request_too_large"
    assert budget_used(gateway, "batch") == 0
    served = client.completions.create(
        model="e2b", prompt=["Once", "Twice"], n=2, max_tokens=200, temperature=1.0
    )
    assert len(served.choices) == 4 and served.usage is not None
    assert budget_used(gateway, "batch") == served.usage.total_tokens  # charged what was used


def url_document(url: str) -> list[anthropic.types.MessageParam]:
    block: Any = {"type": "document", "source": {"type": "url", "url": url}}
    return [{"role": "user", "content": [block, {"type": "text", "text": "How many pears?"}]}]


def test_a_team_over_its_limit_is_refused_before_its_pdf_is_fetched_or_read(
    gateway: RunningGateway, pdf_host: str
) -> None:
    key = new_team(gateway, "one-a-minute", limits={"requests_per_minute": 1})
    chat = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    messages = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    within_one_minute()  # both requests below
    chat.chat.completions.create(
        model="e2b", max_tokens=2, messages=[{"role": "user", "content": "hello"}]
    )  # the minute's one request
    PdfHost.fetched.clear()
    read_before = gateway.pdf_pages_read()

    with pytest.raises(anthropic.RateLimitError) as by_url:
        messages.messages.create(
            model="e2b", max_tokens=2, messages=url_document(f"{pdf_host}/{uuid.uuid4()}.pdf")
        )
    pdf = base64.b64encode(text_pdf([f"Harvest {uuid.uuid4()}"])).decode()
    file: Any = {"type": "file", "file": {"file_data": "data:application/pdf;base64," + pdf}}
    with pytest.raises(openai.RateLimitError) as inline_refused:
        chat.chat.completions.create(
            model="e2b", max_tokens=2, messages=[{"role": "user", "content": [file]}]
        )

    for refused in (by_url.value, inline_refused.value):
        assert "team requests per minute limit reached (1 of 1)" in refused.message
        assert int(refused.response.headers["retry-after"]) >= 1
    assert PdfHost.fetched == []
    assert gateway.pdf_pages_read() == read_before


def test_a_team_within_its_limits_has_its_pdf_fetched_and_read(
    gateway: RunningGateway, pdf_host: str
) -> None:
    """The other side of the check: it takes nothing, so a team with room for one request
    gets that one PDF request served."""
    key = new_team(gateway, "one-pdf-a-minute", limits={"requests_per_minute": 1})
    messages = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    within_one_minute()
    PdfHost.fetched.clear()
    read_before = gateway.pdf_pages_read()
    path = f"/{uuid.uuid4()}.pdf"
    served = messages.messages.create(
        model="e2b", max_tokens=2, messages=url_document(pdf_host + path)
    )
    assert served.usage.input_tokens > 2 * 280  # both pages' pictures
    assert PdfHost.fetched == [path]
    assert gateway.pdf_pages_read() == read_before + 2
