"""The report's pictures (PNG, matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from gemma_fleet.loadtest.report import LoadTestReport, TimelinePoint

LATENCIES = (
    ("ttft", "Time to first token", "ttft_p50", "ttft_p95"),
    ("tpot", "Time per output token", "tpot_p50", "tpot_p95"),
    ("e2e", "End-to-end latency", "e2e_p50", "e2e_p95"),
)


def _by_pool(report: LoadTestReport) -> dict[str, list[TimelinePoint]]:
    pools: dict[str, list[TimelinePoint]] = defaultdict(list)
    for p in report.timeline:
        pools[p.pool].append(p)
    return dict(sorted(pools.items()))


def write_plots(report: LoadTestReport, folder: Path) -> list[Path]:
    """Latency percentiles over time per pool (one PNG per metric), throughput and goodput over
    time with the shape's users, and SLO attainment per workload. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pools = _by_pool(report)
    for key, title, p50, p95 in LATENCIES:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for i, (pool, points) in enumerate(pools.items()):
            colour = f"C{i % 10}"
            xs = [p.t_s + report.window_s / 2 for p in points]  # window middles
            ax.plot(xs, [getattr(p, p95) for p in points], color=colour, label=f"{pool} p95")
            ax.plot(xs, [getattr(p, p50) for p in points], color=colour, linestyle="--",
                    alpha=0.6, label=f"{pool} p50")  # fmt: skip
        slos = sorted({getattr(w.slo, f"{key}_s") for w in report.by_workload if w.requests})
        seen = [v for ps in pools.values() for p in ps if (v := getattr(p, p95)) is not None]
        # Scale to the data: an SLO far above every latency would flatten the lines to zero.
        top = 1.3 * max(seen) if seen else max(slos, default=1.0)
        shown = [v for v in slos if v <= top]
        for value in shown:
            ax.axhline(value, color="red", linewidth=0.8, linestyle=":")
        above = [f"{v:g} s" for v in slos if v > top]
        note = f"; SLO {', '.join(above)} above the scale" if above else ""
        ax.set_title(f"{title} by pool (red: SLOs{note})")
        ax.set_ylim(0, top if top > 0 else 1.0)
        ax.set_xlim(0, report.duration_s)
        ax.set_xlabel("seconds into the test")
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
        if pools:
            ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = folder / f"latency_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(9, 4.5))
    rows = report.totals_timeline
    mid = [w.t_s + report.window_s / 2 for w in rows]
    ax.plot(mid, [w.succeeded_rps for w in rows], marker=".", label="succeeded req/s")
    ax.plot(mid, [w.goodput_rps for w in rows], marker=".", label="goodput (within SLO) req/s")
    ax.plot(mid, [w.rate_limited_rps for w in rows], marker=".", label="429 req/s")
    ax.plot(mid, [w.errors_rps for w in rows], marker=".", color="red", label="errors req/s")
    ax.set_xlabel("seconds into the test")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.set_xlim(0, report.duration_s)
    users = ax.twinx()
    xs = [i * report.duration_s / 200 for i in range(200)]
    users.step(xs, [report.shape.users_at(x) or 0 for x in xs], color="grey", alpha=0.5,
               where="post", label="users (shape)")  # fmt: skip
    users.set_ylabel("virtual users")
    users.set_ylim(0, report.shape.users * 1.15)
    ax.set_title(f"Throughput and goodput ({report.shape.kind} shape)")
    ax.grid(alpha=0.3)
    lines, labels = ax.get_legend_handles_labels()
    more, more_labels = users.get_legend_handles_labels()
    ax.legend(lines + more, labels + more_labels, fontsize=8, loc="upper left")
    fig.tight_layout()
    path = folder / "throughput.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(9, 4))
    served = [w for w in report.by_workload if w.served]
    ax.barh([w.name for w in served], [100 * (w.slo_attainment or 0) for w in served],
            color=["C2" if w.holds else "C3" for w in served])  # fmt: skip
    ax.axvline(100 * report.slo_target, color="black", linestyle=":", label="target")
    ax.set_xlim(0, 100)
    ax.set_xlabel("requests within SLO (%)")
    ax.set_title("SLO attainment by workload")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = folder / "slo_attainment.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
