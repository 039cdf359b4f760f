"""Setting the client's counts beside the gateway's: the gateway's own metrics class produces
the exposition, so label names and formats are the real ones."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gemma_fleet.gateway.metrics import GatewayMetrics
from gemma_fleet.loadtest.gateway_counters import (
    ALL_TEAMS,
    REQUESTS,
    compare,
    delta,
    parse_counters,
    scrape,
)
from gemma_fleet.loadtest.records import RequestRecord


def rec(team: str, pool: str, status: int, error: str | None = None, **kw: int) -> RequestRecord:
    return RequestRecord(started_at=0, workload="w", kind="short_chat", team=team,
                         model="gemma-4", stream=True, status=status, pool=pool, error=error,
                         e2e_s=0.1, **kw)  # fmt: skip


def test_matching_counts_match_and_a_miscount_is_found() -> None:
    metrics = GatewayMetrics()
    metrics.answered("chat", "old", "gemma-4", "p1", "requested", time.perf_counter())
    before = parse_counters(metrics.render().decode())
    for _ in range(3):
        metrics.answered("chat", "a", "gemma-4", "p1", "requested", time.perf_counter())
        metrics.served_tokens("a", "gemma-4-E2B", 10, 5)
    metrics.refused("chat", "b", 429, "rate_limit")
    metrics.refused("chat", "b", 400, "bad_request")
    grown = delta(before, parse_counters(metrics.render().decode()))
    records = [rec("a", "p1", 200, prompt_tokens=10, completion_tokens=5) for _ in range(3)]
    records += [rec("b", "", 429, "rate_limit_exceeded"), rec("b", "", 400, "http_400")]
    result = compare(records, grown)
    assert result.all_match, [r for r in result.rows if not r.matches]
    found = {(r.what, tuple(r.labels.values())): r.gateway for r in result.rows}
    assert found[("requests", ("a", "p1", "200"))] == 3
    assert found[("429 refusals", ("b", "rate_limit"))] == 1
    assert found[("tokens", ("a", "completion"))] == 15
    assert not any("old" in r.labels.values() for r in result.rows)  # before the run

    # one request the client never recorded shows up as a difference
    metrics.answered("chat", "a", "gemma-4", "p1", "requested", time.perf_counter())
    grown = delta(before, parse_counters(metrics.render().decode()))
    result = compare(records, grown)
    assert result.mismatches == 1
    (row,) = [r for r in result.rows if not r.matches]
    assert (row.report, row.gateway) == (3, 4)


def test_every_api_the_load_test_calls_is_counted_and_nothing_else() -> None:
    metrics = GatewayMetrics()
    before = parse_counters(metrics.render().decode())
    for endpoint in ("chat", "messages", "responses"):
        metrics.answered(endpoint, "a", "gemma-4", "p1", "requested", time.perf_counter())
        metrics.refused(endpoint, "b", 429, "rate_limit")
    # another client of the same gateway, on an endpoint the load test never calls
    metrics.answered("completions", "a", "gemma-4", "p1", "requested", time.perf_counter())
    grown = delta(before, parse_counters(metrics.render().decode()))
    records = [rec("a", "p1", 200) for _ in range(3)]
    records += [rec("b", "", 429, "rate_limit_exceeded") for _ in range(3)]
    result = compare(records, grown)
    assert result.all_match, [r for r in result.rows if not r.matches]
    found = {(r.what, tuple(r.labels.values())): r.gateway for r in result.rows}
    assert found[("requests", ("a", "p1", "200"))] == 3
    assert found[("429 refusals", ("b", "rate_limit"))] == 3


def test_requests_cut_short_by_the_test_are_left_out_of_the_comparison() -> None:
    records = [rec("a", "", 0, "stopped_by_load_test"), rec("a", "", 0, "connection")]
    assert compare(records, {}).rows == []


class Balanced:
    """Gateway replicas behind one real HTTP URL, as the serve Service puts them: each scrape
    is answered by the replica `order` names next (the last one again once it runs out)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = [GatewayMetrics() for _ in range(replicas)]
        for replica in self.replicas:
            replica.gateway_replicas.set(replicas)
        self.order: list[int] = [0]
        self.scrapes = 0

    def next_exposition(self) -> bytes:
        self.scrapes += 1
        pick = self.order.pop(0) if len(self.order) > 1 else self.order[0]
        return self.replicas[pick].render()


@pytest.fixture
def balanced() -> Iterator[tuple[Balanced, str]]:
    gateway = Balanced(2)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = gateway.next_exposition()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield gateway, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def _answer(metrics: GatewayMetrics, team: str, times: int) -> None:
    for _ in range(times):
        metrics.answered("chat", team, "gemma-4", "p1", "requested", time.perf_counter())


def test_a_reading_through_a_balancer_sums_every_replica(balanced: tuple[Balanced, str]) -> None:
    gateway, url = balanced
    _answer(gateway.replicas[0], "a", 3)
    _answer(gateway.replicas[1], "a", 5)
    # Replica 1 answers first, twice, before it has read how many replicas run.
    gateway.replicas[1].gateway_replicas.set(-1)
    gateway.order = [1, 1, 0]
    reading = scrape(url, pause_s=0)
    assert (reading.heard, reading.running, reading.complete) == (2, 2, True)
    assert gateway.scrapes == 3
    key = (REQUESTS, (("endpoint", "chat"), ("model", "gemma-4"), ("pool", "p1"),
                      ("status", "200"), ("team", "a")))  # fmt: skip
    assert reading.counters[key] == 8


def test_a_replica_that_never_answers_makes_the_reading_say_so(
    balanced: tuple[Balanced, str],
) -> None:
    gateway, url = balanced
    _answer(gateway.replicas[0], "a", 3)
    gateway.order = [0]  # the balancer never picks replica 1
    started = time.monotonic()
    reading = scrape(url, settle_s=0.5, pause_s=0.05)
    assert time.monotonic() - started < 5
    assert (reading.heard, reading.running, reading.complete) == (1, 2, False)
    assert sum(v for (name, _), v in reading.counters.items() if name == REQUESTS) == 3


def test_teams_sharing_one_key_are_compared_over_their_sum() -> None:
    """With one --api-key, the gateway counts every request under the key's team ("local"),
    while the client files each under its workload's team: the per-team rows all differed
    although nothing was lost. Summed over the teams, they match, and a lost request still
    shows."""
    metrics = GatewayMetrics()
    before = parse_counters(metrics.render().decode())
    for _ in range(3):
        metrics.answered("chat", "local", "gemma-4", "p1", "requested", time.perf_counter())
        metrics.served_tokens("local", "gemma-4-E2B", 10, 5)
    grown = delta(before, parse_counters(metrics.render().decode()))
    records = [rec("lt-a", "p1", 200, prompt_tokens=10, completion_tokens=5) for _ in range(2)]
    records.append(rec("lt-b", "p1", 200, prompt_tokens=10, completion_tokens=5))
    assert compare(records, grown).mismatches > 0  # per team: "local" is not lt-a or lt-b
    shared = compare(records, grown, merge_teams=True)
    assert shared.all_match and shared.rows
    assert {r.labels["team"] for r in shared.rows} == {ALL_TEAMS}
    assert compare(records[:2], grown, merge_teams=True).mismatches == 3
