"""The gateway's own Prometheus counters for a run: scraped before and after, subtracted, and
set beside what the load test's client saw. A difference means one side miscounts.

Counters read (platform/gateway/metrics.py): `gemma_fleet_gateway_requests_total{endpoint,
team,model,pool,status}`, `gemma_fleet_gateway_rejections_total{endpoint,team,status,reason}`,
`gemma_fleet_gateway_tokens_total{team,model,kind}`. Each gateway replica counts only what it
served, and a scrape through a load-balanced URL reaches one of them: every exposition names its
replica (`gemma_fleet_gateway_replica_info`) and says how many run
(`gemma_fleet_gateway_replicas`), so a reading is summed over all of them. A gateway with
GEMMA_FLEET_METRICS_TOKEN set answers /metrics only to that token (`Authorization: Bearer`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, ConfigDict

from gemma_fleet.loadtest.apis import APIS
from gemma_fleet.loadtest.records import QUOTA, STOPPED, RequestRecord

REQUESTS = "gemma_fleet_gateway_requests_total"
REJECTIONS = "gemma_fleet_gateway_rejections_total"
TOKENS = "gemma_fleet_gateway_tokens_total"
REPLICA_INFO = "gemma_fleet_gateway_replica_info"
REPLICA_COUNT = "gemma_fleet_gateway_replicas"

Labels = tuple[tuple[str, str], ...]
Sample = tuple[str, Labels]


def parse_counters(text: str) -> dict[Sample, float]:
    """Every `*_total` sample of an exposition, keyed by name and sorted labels."""
    return _parse(text)[0]


def _parse(text: str) -> tuple[dict[Sample, float], str, int]:
    """(counters, the replica that rendered `text`, how many replicas it says run: 1 when it
    does not say, below 1 when it does not know yet)."""
    values: dict[Sample, float] = {}
    replica, running = "", 1
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
            elif sample.name == REPLICA_INFO:
                replica = sample.labels.get("gateway_replica", "")
            elif sample.name == REPLICA_COUNT:
                running = int(sample.value)
    return values, replica, running


class ScrapeRefused(RuntimeError):
    """The gateway's /metrics answered 401: it wants the metrics token."""


@dataclass(frozen=True)
class Reading:
    """The gateway's counters summed over the replicas `heard` of the `running` ones."""

    counters: dict[Sample, float]
    heard: int
    running: int

    @property
    def complete(self) -> bool:
        return self.heard >= self.running


def scrape(
    root_url: str,
    timeout_s: float = 10.0,
    *,
    settle_s: float = 30.0,
    pause_s: float = 0.1,
    token: str | None = None,
) -> Reading:
    """The counters at `{root_url}/metrics` now (root: the gateway's URL without /v1), summed
    over every gateway replica: scraped again until each running replica has answered once,
    or `settle_s` has passed (then the reading says how many it missed). `token`: the
    gateway's metrics token (without the whitespace around it, as the gateway reads it);
    ScrapeRefused when it is missing or wrong."""
    url = root_url.rstrip("/") + "/metrics"
    token = token.strip() if token else None
    headers = {"authorization": f"Bearer {token}"} if token else {}
    answers: dict[str, dict[Sample, float]] = {}
    running = 0  # not known yet
    deadline = time.monotonic() + settle_s
    while True:
        response = httpx.get(url, timeout=timeout_s, headers=headers)
        if response.status_code == 401:
            what = "the metrics token was refused" if token else "no metrics token was sent"
            raise ScrapeRefused(
                f"GET {url}: 401: {what}; set --metrics-token / GEMMA_FLEET_METRICS_TOKEN "
                "(or --metrics-token-file / GEMMA_FLEET_METRICS_TOKEN_FILE)"
            )
        response.raise_for_status()
        counters, replica, told = _parse(response.text)
        answers[replica] = counters
        running = max(running, told)
        if (running >= 1 and len(answers) >= running) or time.monotonic() >= deadline:
            break
        time.sleep(pause_s)
    running = max(running, len(answers))
    summed: Counter[Sample] = Counter()
    for counters in answers.values():
        summed.update(counters)
    return Reading(dict(summed), heard=len(answers), running=running)


def delta(before: dict[Sample, float], after: dict[Sample, float]) -> dict[Sample, float]:
    """What the counters grew by between two scrapes (series that did not grow are left out)."""
    grown = {k: v - before.get(k, 0.0) for k, v in after.items()}
    return {k: v for k, v in grown.items() if v}


class CounterRow(BaseModel):
    """One figure of the report beside the gateway's count of the same thing."""

    model_config = ConfigDict(extra="forbid")

    what: str
    labels: dict[str, str]
    report: float
    gateway: float

    @property
    def matches(self) -> bool:
        return self.report == self.gateway


class GatewayComparison(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[CounterRow]
    mismatches: int

    @property
    def all_match(self) -> bool:
        return self.mismatches == 0


def _sum(
    grown: dict[Sample, float], name: str, keys: tuple[str, ...], **only: str
) -> Counter[tuple[str, ...]]:
    """`name`'s growth summed by `keys`, over the series of the endpoints a load test calls
    (chat completions, Messages, Responses) that match `only`."""
    out: Counter[tuple[str, ...]] = Counter()
    for (metric, labels), value in grown.items():
        as_dict = dict(labels)
        if metric != name or as_dict.get("endpoint", "chat") not in APIS:
            continue
        if all(as_dict.get(k) == v for k, v in only.items()):
            out[tuple(as_dict.get(k, "") for k in keys)] += int(value)
    return out


def client_counts(
    records: Iterable[RequestRecord],
) -> tuple[Counter[tuple[str, ...]], Counter[tuple[str, ...]], Counter[tuple[str, ...]]]:
    """From the client's records: answers by (team, pool, status), 429 refusals by (team,
    reason), tokens by (team, kind). Requests that never got a status (network errors, a
    request the test's end cut short) are left out: the gateway may or may not have seen them."""
    answers: Counter[tuple[str, ...]] = Counter()
    refusals: Counter[tuple[str, ...]] = Counter()
    tokens: Counter[tuple[str, ...]] = Counter()
    for r in records:
        if r.status == 0 or r.error == STOPPED:
            continue
        answers[(r.team, r.pool, str(r.status))] += 1
        if r.status == 429:
            refusals[(r.team, "budget" if r.error == QUOTA else "rate_limit")] += 1
        tokens[(r.team, "prompt")] += r.prompt_tokens
        tokens[(r.team, "completion")] += r.completion_tokens
    return answers, refusals, tokens


# The team label of every row when the gateway counts under other teams (compare).
ALL_TEAMS = "(all the run's teams)"


def _merge_teams(counts: Counter[tuple[str, ...]]) -> Counter[tuple[str, ...]]:
    out: Counter[tuple[str, ...]] = Counter()
    for key, value in counts.items():
        out[(ALL_TEAMS, *key[1:])] += value
    return out


def compare(
    records: list[RequestRecord], grown: dict[Sample, float], *, merge_teams: bool = False
) -> GatewayComparison:
    """Set the client's counts beside the gateway's for the endpoints a load test calls. The
    gateway counts a request under the team of its key; when that is not the workload's team
    (teams sharing a key, another team's key, a gateway without keys), `merge_teams` sums the
    rows over every team on both sides (team ALL_TEAMS)."""
    answers, refusals, tokens = client_counts(records)
    rows: list[CounterRow] = []
    answer_keys, refusal_keys, token_keys = (
        ("team", "pool", "status"),
        ("team", "reason"),
        ("team", "kind"),
    )
    sides = (
        ("requests", answer_keys, answers, _sum(grown, REQUESTS, answer_keys)),
        (
            "429 refusals",
            refusal_keys,
            refusals,
            _sum(grown, REJECTIONS, refusal_keys, status="429"),
        ),
        ("tokens", token_keys, tokens, _sum(grown, TOKENS, token_keys)),
    )
    for what, keys, client, gateway in sides:
        if merge_teams:
            client, gateway = _merge_teams(client), _merge_teams(gateway)
        for key in sorted(set(client) | set(gateway)):
            rows.append(
                CounterRow(
                    what=what,
                    labels=dict(zip(keys, key, strict=True)),
                    report=float(client.get(key, 0)),
                    gateway=float(gateway.get(key, 0)),
                )
            )
    return GatewayComparison(rows=rows, mismatches=sum(not r.matches for r in rows))
