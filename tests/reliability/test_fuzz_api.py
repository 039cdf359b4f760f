"""Schemathesis fuzzing of every route in the gateway's own OpenAPI document, against the
suite's real gateway (team keys required, real Redis): generated bodies that fit the published
request models (positive) and that break them (negative), sent with a team key to API routes
and with the admin key to admin routes. Every answer must be a documented status with a
conforming body (an OpenAI or Anthropic error object for refusals), never a 5xx, and must come
within 10 s (a hang fails the request). Negative data must be refused with a 4xx.

Bounded: GEMMA_FLEET_FUZZ_EXAMPLES examples per route and mode (default 25, derandomized so CI
is repeatable; raise it for a longer local hunt). GEMMA_FLEET_FUZZ_REPORT=FILE writes the
figures (examples, statuses, time) as JSON."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from gemma_fleet.gateway.openapi import OPERATIONS

from .conftest import ADMIN_KEY, Fleet, running_fleet

EXAMPLES = int(os.environ.get("GEMMA_FLEET_FUZZ_EXAMPLES", "25"))
REQUEST_TIMEOUT_S = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Generated requests that fit the schema may still ask an engine for up to a pool's whole
# context; keep what is generated, but cap the output so the run stays bounded in time.
MAX_OUTPUT = 16

pytestmark = pytest.mark.slow

STATS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Fleet]]:
    """A gateway and Redis of the fuzzer's own: it creates and deletes teams and keys at
    random (and learns names from answers), which the other modules must not see."""
    with running_fleet(tmp_path_factory.mktemp("fuzz-redis"), "fuzz") as fleet:
        schema = schemathesis.openapi.from_url(fleet.url + "/openapi.json")
        schema.config.update(base_url=fleet.url)
        yield schema, fleet
    report = os.environ.get("GEMMA_FLEET_FUZZ_REPORT")
    if report:
        with open(report, "w") as out:
            json.dump({k: dict(v) for k, v in sorted(STATS.items())}, out, indent=1)


def _label(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


# Open routes take nothing from a client (no body, path, query or credential): no negative case.
OPEN_ROUTES = ["GET /v1/models", "GET /metrics", "GET /health", "GET /ready"]
ROUTES = sorted(_label(m, p) for m, p in OPERATIONS if (m, p) != ("get", "/ready"))
# Any string is a well-formed response id (none is stored: each is a 404): nothing to break.
NOTHING_INVALID = ["GET /v1/responses/{response_id}", "DELETE /v1/responses/{response_id}"]
CASES = [(r, GenerationMode.POSITIVE) for r in ROUTES + OPEN_ROUTES] + [
    (r, GenerationMode.NEGATIVE) for r in ROUTES if r not in NOTHING_INVALID
]


def _headers(path: str, fleet: Fleet) -> dict[str, str]:
    key = ADMIN_KEY if path.startswith("/admin/") else fleet.key
    return {"authorization": f"Bearer {key}"}


SERVED = ["gemma-4", "e2b", "e4b", "moe", "dense"]


def _shaped(case: Any, data: st.DataObject) -> None:
    """Steer a fitting body past the model lookup (a random model name is a 404 before
    anything else is looked at) to a served model, and cap its output (a generated request
    may ask an engine for a pool's whole context)."""
    body = case.body
    if not isinstance(body, dict):
        return
    # Hypothesis favours the first choices; the last keeps the generated name.
    model = data.draw(st.sampled_from([*SERVED, None]), label="model")
    if "model" in body and model is not None:
        body["model"] = model
    for field in ("max_tokens", "max_completion_tokens", "min_tokens", "max_output_tokens"):
        value = body.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT:
            body[field] = MAX_OUTPUT


@pytest.mark.parametrize(("route", "mode"), CASES, ids=[f"{r} {m.value}" for r, m in CASES])
def test_route_answers_every_generated_request_within_its_contract(
    api: tuple[Any, Fleet], route: str, mode: GenerationMode
) -> None:
    schema, fleet = api
    method, path = route.split(" ", 1)
    operation = schema[path][method]
    stats = STATS.setdefault(f"{route} {mode.value}", Counter())
    headers = _headers(path, fleet)
    checks = CHECKS + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
    started = time.monotonic()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy(generation_mode=mode))
        if mode is GenerationMode.POSITIVE:
            _shaped(case, data)
        response = case.call_and_validate(headers=headers, checks=checks, timeout=REQUEST_TIMEOUT_S)
        stats["examples"] += 1
        stats[str(response.status_code)] += 1

    try:
        run()
    finally:
        stats["seconds"] = round(time.monotonic() - started)
    assert stats["examples"] > 0
