"""The load test's report, computed from the per-request records: latency percentiles overall
and over time per pool, SLO attainment, goodput (requests per second within SLO), errors by
type (each with its first message and request ids), 429s by team, and - when the gateway could
be scraped - its own counters beside ours.

Definitions (also in docs/loadtest.md):
- A request *meets its SLO* when it succeeded, its end-to-end time is within `e2e_s` and, if
  streamed, its TTFT within `ttft_s` and its TPOT (when it had 2+ tokens) within `tpot_s`.
- *Attainment* is met / served, where served leaves out expected 429s (the limits working as
  configured, reported apart) and requests the test's own end cut short. Other errors count as
  misses.
- *Goodput* is requests meeting their SLO per second of the test.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gemma_fleet.loadtest.apis import Api
from gemma_fleet.loadtest.gateway_counters import GatewayComparison
from gemma_fleet.loadtest.records import STOPPED, RequestRecord
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.staffing import staffing
from gemma_fleet.loadtest.workload import Slo, WorkloadFile

# Request ids kept per error type: enough to find a few traces, few enough to read.
EXAMPLE_REQUESTS = 3


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Percentiles(Model):
    """Seconds; None when there were no samples."""

    count: int
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None


class GroupStats(Model):
    """One slice of the requests: everything, a workload, a pool, a team."""

    name: str
    requests: int
    succeeded: int
    rate_limited: int = Field(description="expected 429s")
    errors: int = Field(description="failures other than expected 429s and the test's end")
    served: int = Field(description="requests that count toward attainment")
    slo_met: int
    slo_attainment: float | None
    throughput_rps: float
    goodput_rps: float
    prompt_tokens: int
    completion_tokens: int
    ttft: Percentiles
    tpot: Percentiles
    e2e: Percentiles


class WorkloadStats(GroupStats):
    kind: str
    api: Api = "chat"
    team: str
    slo: Slo
    pools: dict[str, int] = Field(description="requests served per pool")
    holds: bool | None = Field(description="attainment >= the target; None: nothing served")


class TimelinePoint(Model):
    """One pool in one time window (start `t_s` seconds into the test)."""

    t_s: float
    pool: str
    requests: int
    goodput_rps: float
    ttft_p50: float | None
    ttft_p95: float | None
    tpot_p50: float | None
    tpot_p95: float | None
    e2e_p50: float | None
    e2e_p95: float | None


class WindowTotals(Model):
    """Every request that finished in one time window, per second."""

    t_s: float
    succeeded_rps: float
    goodput_rps: float
    rate_limited_rps: float
    errors_rps: float


class ErrorExample(Model):
    """What one type of error looked like, to look it up in the fleet's traces and logs."""

    message: str = Field(description="the first such error's message, shortened")
    request_ids: list[str] = Field(
        description=f"the first {EXAMPLE_REQUESTS} such requests' x-request-id (none for a "
        "request that got no answer: a timeout, a refused connection)"
    )


class LoadTestReport(Model):
    """The report's JSON (report.json); report.md and the plots are rendered from it."""

    host: str
    workload_file: str
    started_at: datetime
    duration_s: float
    shape: ShapeSpec
    seed: int
    slo_target: float
    verdict: str = Field(description="'SLOs hold' or 'SLOs missed' or 'no requests served'")
    totals: GroupStats
    by_workload: list[WorkloadStats]
    by_pool: list[GroupStats]
    by_model: list[GroupStats] = Field(description="by the model the requests named")
    by_team: list[GroupStats]
    errors_by_type: dict[str, int]
    error_examples: dict[str, ErrorExample] = Field(
        default_factory=dict, description="error type -> its first message and request ids"
    )
    rate_limited_by_team: dict[str, dict[str, int]] = Field(
        description="team -> 429 error code -> count"
    )
    window_s: float
    timeline: list[TimelinePoint]
    totals_timeline: list[WindowTotals]
    gateway: GatewayComparison | None = None
    gateway_note: str = ""
    not_run: list[str] = Field(
        default_factory=list,
        description="workloads switched on (weight > 0) that sent no request: no user (see "
        "no_user), or users that sent nothing before the end; the verdict does not cover them",
    )
    no_user: list[str] = Field(
        default_factory=list,
        description="of not_run, the workloads Locust gave no user: too small a share of the "
        "weight at the shape's peak, or dealt past the most users the spawn rate starts before "
        "the end; the others had users that sent nothing before the end",
    )
    cut_short: list[str] = Field(
        default_factory=list,
        description="workloads that sent requests and had every one cut short when the test "
        "stopped its users (at the end, or ramping down): the verdict does not cover them either",
    )

    @property
    def workloads_ran(self) -> list[str]:
        return [w.name for w in self.by_workload if w.requests > 0]


def error_examples(records: Iterable[RequestRecord]) -> dict[str, ErrorExample]:
    """Each error type's first message and first few request ids, in the records' order."""
    examples: dict[str, ErrorExample] = {}
    for r in records:
        if r.error is None:
            continue
        example = examples.get(r.error)
        if example is None:  # the first of its type (a model built only then)
            example = examples[r.error] = ErrorExample(message=r.message, request_ids=[])
        if r.request_id and len(example.request_ids) < EXAMPLE_REQUESTS:
            example.request_ids.append(r.request_id)
    return examples


def percentiles(values: Sequence[float]) -> Percentiles:
    if not values:
        return Percentiles(count=0)
    a = np.asarray(values, dtype=float)
    p50, p90, p95, p99 = (float(x) for x in np.percentile(a, [50, 90, 95, 99]))
    return Percentiles(
        count=len(a), mean=float(a.mean()), p50=p50, p90=p90, p95=p95, p99=p99, max=float(a.max())
    )


def meets(record: RequestRecord, slo: Slo) -> bool:
    """Whether one request met its SLO (see the module docstring)."""
    if not record.ok or record.e2e_s > slo.e2e_s:
        return False
    if record.stream:
        if record.ttft_s is None or record.ttft_s > slo.ttft_s:
            return False
        if record.tpot_s is not None and record.tpot_s > slo.tpot_s:
            return False
    return True


def _counts_toward_slo(r: RequestRecord) -> bool:
    return not r.expected_429 and r.error != STOPPED


def group_stats(
    name: str, records: Sequence[RequestRecord], slo_of: Callable[[str], Slo], duration_s: float
) -> GroupStats:
    served = [r for r in records if _counts_toward_slo(r)]
    met = sum(meets(r, slo_of(r.workload)) for r in served)
    ok = [r for r in records if r.ok]
    streamed = [r for r in ok if r.stream]
    return GroupStats(
        name=name,
        requests=len(records),
        succeeded=len(ok),
        rate_limited=sum(r.expected_429 for r in records),
        errors=sum(not r.ok and not r.expected_429 and r.error != STOPPED for r in records),
        served=len(served),
        slo_met=met,
        slo_attainment=met / len(served) if served else None,
        throughput_rps=len(ok) / duration_s,
        goodput_rps=met / duration_s,
        prompt_tokens=sum(r.prompt_tokens for r in ok),
        completion_tokens=sum(r.completion_tokens for r in ok),
        ttft=percentiles([r.ttft_s for r in streamed if r.ttft_s is not None]),
        tpot=percentiles([r.tpot_s for r in streamed if r.tpot_s is not None]),
        e2e=percentiles([r.e2e_s for r in ok]),
    )


def _by(
    records: Iterable[RequestRecord], key: Callable[[RequestRecord], str]
) -> dict[str, list[RequestRecord]]:
    groups: dict[str, list[RequestRecord]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return dict(sorted(groups.items()))


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def timeline(
    records: Sequence[RequestRecord],
    started: float,
    duration_s: float,
    window_s: float,
    slo_of: Callable[[str], Slo],
) -> list[TimelinePoint]:
    """Per pool and window (by when requests finished): percentiles and goodput."""
    points: list[TimelinePoint] = []
    windows = max(1, int(np.ceil(duration_s / window_s)))
    for pool, group in _by((r for r in records if r.ok), lambda r: r.pool or "(none)").items():
        buckets: dict[int, list[RequestRecord]] = defaultdict(list)
        for r in group:
            index = int((r.started_at + r.e2e_s - started) // window_s)
            buckets[min(max(index, 0), windows - 1)].append(r)
        for index in range(windows):
            rs = buckets.get(index, [])
            ttft = [r.ttft_s for r in rs if r.ttft_s is not None]
            tpot = [r.tpot_s for r in rs if r.tpot_s is not None]
            e2e = [r.e2e_s for r in rs]
            points.append(
                TimelinePoint(
                    t_s=index * window_s,
                    pool=pool,
                    requests=len(rs),
                    goodput_rps=sum(meets(r, slo_of(r.workload)) for r in rs) / window_s,
                    ttft_p50=_pct(ttft, 50),
                    ttft_p95=_pct(ttft, 95),
                    tpot_p50=_pct(tpot, 50),
                    tpot_p95=_pct(tpot, 95),
                    e2e_p50=_pct(e2e, 50),
                    e2e_p95=_pct(e2e, 95),
                )
            )
    return points


def totals_timeline(
    records: Sequence[RequestRecord],
    started: float,
    duration_s: float,
    window_s: float,
    slo_of: Callable[[str], Slo],
) -> list[WindowTotals]:
    """Successes, goodput, 429s and other errors per second, window by window."""
    windows = max(1, int(np.ceil(duration_s / window_s)))
    counts = np.zeros((windows, 4))
    for r in records:
        if r.error == STOPPED:
            continue
        index = min(max(int((r.started_at + r.e2e_s - started) // window_s), 0), windows - 1)
        if r.ok:
            counts[index, 0] += 1
            counts[index, 1] += meets(r, slo_of(r.workload))
        else:
            counts[index, 2 if r.expected_429 else 3] += 1
    return [
        WindowTotals(
            t_s=i * window_s,
            succeeded_rps=float(row[0] / window_s),
            goodput_rps=float(row[1] / window_s),
            rate_limited_rps=float(row[2] / window_s),
            errors_rps=float(row[3] / window_s),
        )
        for i, row in enumerate(counts)
    ]


def window_for(duration_s: float) -> float:
    """About 40 windows per test, each 5 s at least."""
    return float(max(5, round(duration_s / 40)))


def build_report(
    records: Sequence[RequestRecord],
    *,
    workload: WorkloadFile,
    workload_file: str,
    host: str,
    shape: ShapeSpec,
    started: float,
    ended: float,
    gateway: GatewayComparison | None = None,
    gateway_note: str = "",
) -> LoadTestReport:
    """Compute the report from every request's record."""
    duration = max(ended - started, 1e-9)
    slo_of = workload.slo_of
    by_workload: list[WorkloadStats] = []
    grouped = _by(records, lambda r: r.workload)
    for w in workload.workloads:
        rs = grouped.get(w.name, [])
        stats = group_stats(w.name, rs, slo_of, duration)
        att = stats.slo_attainment
        by_workload.append(
            WorkloadStats(
                **stats.model_dump(),
                kind=w.kind,
                api=w.api,
                team=w.team,
                slo=slo_of(w.name),
                pools=dict(Counter(r.pool for r in rs if r.ok)),
                holds=None if att is None else att >= workload.slo_target,
            )
        )
    totals = group_stats("all", records, slo_of, duration)
    not_run = [
        w.name
        for w, stats in zip(workload.workloads, by_workload, strict=True)
        if w.weight and not stats.requests
    ]
    limited: dict[str, dict[str, int]] = defaultdict(dict)
    for r in records:
        if r.expected_429 and r.error is not None:
            limited[r.team][r.error] = limited[r.team].get(r.error, 0) + 1
    verdicts = [w.holds for w in by_workload if w.holds is not None]
    verdict = "no requests served" if not verdicts else (
        "SLOs hold" if all(verdicts) else "SLOs missed"
    )  # fmt: skip
    window = window_for(duration)
    return LoadTestReport(
        host=host,
        workload_file=workload_file,
        started_at=datetime.fromtimestamp(started, UTC),
        duration_s=duration,
        shape=shape,
        seed=workload.seed,
        slo_target=workload.slo_target,
        verdict=verdict,
        not_run=not_run,
        no_user=[
            n for n in staffing(workload, shape.most_users_started()).unstaffed if n in not_run
        ],
        cut_short=[
            w.name
            for w in workload.workloads
            if (sent := grouped.get(w.name)) and all(r.error == STOPPED for r in sent)
        ],
        totals=totals,
        by_workload=by_workload,
        by_pool=[
            group_stats(p or "(none)", rs, slo_of, duration)
            for p, rs in _by(records, lambda r: r.pool).items()
        ],
        by_model=[
            group_stats(m, rs, slo_of, duration)
            for m, rs in _by(records, lambda r: r.model).items()
        ],
        by_team=[
            group_stats(t, rs, slo_of, duration) for t, rs in _by(records, lambda r: r.team).items()
        ],
        errors_by_type=dict(Counter(r.error for r in records if r.error is not None)),
        error_examples=error_examples(records),
        rate_limited_by_team={t: dict(c) for t, c in sorted(limited.items())},
        window_s=window,
        timeline=timeline(records, started, duration, window, slo_of),
        totals_timeline=totals_timeline(records, started, duration, window, slo_of),
        gateway=gateway,
        gateway_note=gateway_note,
    )
