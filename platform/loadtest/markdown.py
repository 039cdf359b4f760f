"""The report as Markdown (report.md), next to its PNG plots."""

from __future__ import annotations

from collections.abc import Sequence

from gemma_fleet.loadtest.report import GroupStats, LoadTestReport, Percentiles


def _s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.2f} ms"  # per-token times of fast pools are sub-millisecond
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _lat(p: Percentiles) -> str:
    return f"{_s(p.p50)} / {_s(p.p95)} / {_s(p.p99)}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _cell(text: str) -> str:
    """`text` as one table cell: a message may hold a pipe or a line break."""
    return " ".join(text.replace("|", "\\|").split()) or "-"


def _groups(groups: Sequence[GroupStats]) -> list[str]:
    return _table(
        ["", "requests", "ok", "429", "errors", "SLO met", "goodput/s",
         "TTFT p50/p95/p99", "TPOT p50/p95/p99", "e2e p50/p95/p99", "tokens in/out"],
        [
            [g.name, str(g.requests), str(g.succeeded), str(g.rate_limited), str(g.errors),
             percent(g.slo_attainment), f"{g.goodput_rps:.2f}", _lat(g.ttft), _lat(g.tpot),
             _lat(g.e2e), f"{g.prompt_tokens:,} / {g.completion_tokens:,}"]
            for g in groups
        ],
    )  # fmt: skip


def coverage_warnings(report: LoadTestReport) -> list[str]:
    """A sentence for each kind of workload the verdict does not cover, if any."""

    def them(names: list[str]) -> str:
        return "it" if len(names) == 1 else "them"

    out = []
    shape = report.shape
    if names := [n for n in report.not_run if n in report.no_user]:
        if (started := shape.most_users_started()) < shape.users:
            why = (
                f"got no user: at --spawn-rate {shape.spawn_rate:g} at most {started} of "
                f"{shape.users} users start in {shape.duration_s:g} s, and Locust deals the "
                "lightest workloads' users last, so the verdict does not cover "
                f"{them(names)}; a faster spawn rate or a longer test would."
            )
        else:
            why = (
                f"got no user at {shape.users} users (too small a share of the weight), so "
                f"the verdict does not cover {them(names)}."
            )
        out.append(f"Not tested: {', '.join(names)} {why}")
    if names := [n for n in report.not_run if n not in report.no_user]:
        out.append(
            f"Not tested: {', '.join(names)} had users that sent no request before the test "
            "ended (a user thinks for its think_time_s before each request), so the verdict "
            f"does not cover {them(names)}; a longer test would."
        )
    if names := report.cut_short:
        out.append(
            f"Not measured: every request {', '.join(names)} sent was cut short when the test "
            f"stopped its users (at the end, or ramping down), so the verdict does not cover "
            f"{them(names)}; a longer test would."
        )
    return out


def coverage_lines(report: LoadTestReport) -> list[str]:
    return [line for warning in coverage_warnings(report) for line in ("", f"**{warning}**")]


def render_markdown(report: LoadTestReport, plots: Sequence[str]) -> str:
    """The whole report; `plots` are PNG file names relative to the report."""
    t = report.totals
    shape = report.shape
    out = [
        f"# Load test: {report.verdict}",
        "",
        f"`{report.host}`, workload `{report.workload_file}` (seed {report.seed}), shape "
        f"**{shape.kind}** up to {shape.users} users for {report.duration_s:.0f} s, started "
        f"{report.started_at:%Y-%m-%d %H:%M:%S} UTC.",
        "",
        f"{t.requests} requests: {t.succeeded} succeeded, {t.rate_limited} refused by a limit "
        f"(429), {t.errors} other errors. SLO attainment {percent(t.slo_attainment)} (target "
        f"{percent(report.slo_target)}), goodput {t.goodput_rps:.2f} req/s of "
        f"{t.throughput_rps:.2f} req/s served.",
        *coverage_lines(report),
        "",
        "## SLOs by workload",
        "",
    ]
    out += _table(
        ["workload", "kind", "api", "team", "SLO (TTFT / TPOT / e2e)", "served", "met",
         "attainment", "holds", "pools"],
        [
            [w.name, w.kind, w.api, w.team,
             f"{_s(w.slo.ttft_s)} / {_s(w.slo.tpot_s)} / {_s(w.slo.e2e_s)}", str(w.served),
             str(w.slo_met), percent(w.slo_attainment),
             {True: "yes", False: "**no**", None: "-"}[w.holds],
             ", ".join(f"{p or '-'} {n}" for p, n in sorted(w.pools.items()))]
            for w in report.by_workload
        ],
    )  # fmt: skip
    out += ["", "## Latency by workload", "", *_groups(report.by_workload)]
    out += ["", "## Latency by pool", "", *_groups(report.by_pool)]
    out += ["", "## By requested model", "", *_groups(report.by_model)]
    out += ["", "## Over time", ""]
    out += [f"![{p}]({p})" for p in plots]
    out += ["", "## Errors by type", ""]
    if report.errors_by_type:
        rows = []
        for kind, count in sorted(report.errors_by_type.items()):
            example = report.error_examples.get(kind)  # absent in reports older than it
            message = _cell(example.message) if example else "-"
            ids = ", ".join(example.request_ids) if example and example.request_ids else "-"
            rows.append([kind, str(count), message, ids])
        out += _table(["type", "count", "first message", "requests (x-request-id)"], rows)
    else:
        out.append("None.")
    out += ["", "## 429s by team", ""]
    if report.rate_limited_by_team:
        out += _table(
            ["team", "code", "count"],
            [[team, code, str(n)] for team, codes in report.rate_limited_by_team.items()
             for code, n in sorted(codes.items())],
        )  # fmt: skip
    else:
        out.append("None.")
    out += ["", "## Checked against the gateway's counters", ""]
    if report.gateway is None:
        out.append(report.gateway_note or "The gateway's /metrics could not be read.")
    else:
        g = report.gateway
        out.append(
            "Every figure matches the gateway's Prometheus counters for this run."
            if g.all_match
            else f"**{g.mismatches} figure(s) differ** from the gateway's counters."
        )
        out.append("")
        out += _table(
            ["counter", "labels", "report", "gateway", ""],
            [[r.what, ", ".join(f"{k}={v or '-'}" for k, v in r.labels.items()),
              f"{r.report:g}", f"{r.gateway:g}", "ok" if r.matches else "**differs**"]
             for r in g.rows],
        )  # fmt: skip
    return "\n".join(out) + "\n"
