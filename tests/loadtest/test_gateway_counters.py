"""Setting the client's counts beside the gateway's: the gateway's own metrics class produces
the exposition, so label names and formats are the real ones."""

from __future__ import annotations

import time

from gemma_fleet.gateway.metrics import GatewayMetrics
from gemma_fleet.loadtest.gateway_counters import compare, delta, parse_counters
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


def test_requests_cut_short_by_the_test_are_left_out_of_the_comparison() -> None:
    records = [rec("a", "", 0, "stopped_by_load_test"), rec("a", "", 0, "connection")]
    assert compare(records, {}).rows == []
