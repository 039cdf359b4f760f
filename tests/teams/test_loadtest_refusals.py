"""The load test's client tells a team limit's 429 from any other failure on every API it
calls, Anthropic's Messages included, whose errors carry no code: the report counts these as
expected refusals (by limit), not as errors. Real redis-server, simulated pools in-process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests
from gateway_harness import RunningGateway, within_one_minute

from gemma_fleet.loadtest.apis import APIS, Api, body_for
from gemma_fleet.loadtest.exchange import Exchange, call
from gemma_fleet.loadtest.records import CONCURRENCY_LIMITED, QUOTA, RATE_LIMITED
from gemma_fleet.teams.limits import TeamLimits

from .test_api_teams import new_team, spend_budget

pytestmark = pytest.mark.slow


def _send(gw: RunningGateway, key: str, api: Api, **fields: Any) -> Exchange:
    chat = {"model": "e2b", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8, "stream": False, **fields}  # fmt: skip
    with requests.Session() as session:
        return call(session, gw.url + "/v1", key, body_for(api, chat), 60, api)


@pytest.mark.parametrize("api", APIS)
def test_a_rate_limit_is_an_expected_429(gateway: RunningGateway, api: Api) -> None:
    within_one_minute()
    key = new_team(gateway, f"lt-rpm-{api}", limits={"requests_per_minute": 1})
    first = _send(gateway, key, api)
    assert first.error is None and first.completion_tokens > 0, first.message
    refused = _send(gateway, key, api)
    assert (refused.status, refused.error) == (429, RATE_LIMITED), refused.message
    assert refused.retry_after_s is not None and refused.retry_after_s >= 1


@pytest.mark.parametrize("api", APIS)
def test_a_spent_budget_is_an_expected_429(gateway: RunningGateway, api: Api) -> None:
    team = f"lt-budget-{api}"
    limits = TeamLimits(token_budget=100, budget_period="day")
    key = new_team(gateway, team, limits=limits.model_dump())
    spend_budget(gateway, team, limits, 80)  # what is left is less than the request needs
    refused = _send(gateway, key, api, max_tokens=60)
    assert (refused.status, refused.error) == (429, QUOTA), refused.message


@pytest.mark.parametrize("api", APIS)
def test_a_concurrency_limit_is_an_expected_429(gateway: RunningGateway, api: Api) -> None:
    key = new_team(gateway, f"lt-conc-{api}", limits={"max_concurrent_requests": 1})
    # The "slow" pool runs in real time: 100 tokens keep the first request running (asked of
    # chat completions, which pass min_tokens on).
    hold = {"model": "slow", "max_tokens": 100, "min_tokens": 100}
    running = threading.Thread(target=_send, args=(gateway, key, "chat"), kwargs=hold)
    running.start()
    try:
        time.sleep(0.5)
        refused = _send(gateway, key, api)
    finally:
        running.join()
    assert (refused.status, refused.error) == (429, CONCURRENCY_LIMITED), refused.message
