"""The CI load test: the local fleet with simulated engines (fleet-ci.yaml), started the way
`gemma-fleet loadtest --local` starts it, a short headless Locust run of every workload kind
and API (workload-ci.yaml) under a spike shape, and the report checked against the gateway's
own Prometheus counters, scraped here independently before and after the run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.loadtest.apis import APIS
from gemma_fleet.loadtest.records import EXPECTED_429
from gemma_fleet.loadtest.report import LoadTestReport
from gemma_fleet.loadtest.runner import LoadTestPlan, LoadTestResult, local_fleet_host, run_loadtest
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.workload import load_workload

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
FLEET = HERE / "fleet-ci.yaml"
WORKLOAD = HERE / "workload-ci.yaml"
SETTINGS = LocalFleetSettings(
    http_port=8780,
    gcs_port=6780,
    min_worker_port=25000,
    max_worker_port=25499,
    temp_dir=Path("/tmp/ray-loadtest"),
    ready_timeout_s=400,
)
# 4 users, 8 during the middle 40%: the ramp-down stops users mid-test, the riskiest moment for
# a request the gateway counts and the report misses.
SHAPE = ShapeSpec(kind="spike", duration_s=30, users=8, base_fraction=0.5, spike_at=0.3,
                  spike_length=0.4)  # fmt: skip

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(root: str) -> Series:
    text = httpx.get(root + "/metrics", timeout=10).text
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _grown(
    before: Series, after: Series, name: str, by: str, **match: str | tuple[str, ...]
) -> Counter[str]:
    """Growth of `name` between the scrapes, by the label `by`, over the series whose labels
    match `match` (a tuple: any of its values)."""
    wanted = {k: (v,) if isinstance(v, str) else v for k, v in match.items()}
    out: Counter[str] = Counter()
    for (metric, labels), value in after.items():
        d = dict(labels)
        if metric == name and all(d.get(k) in v for k, v in wanted.items()):
            grown = value - before.get((metric, labels), 0.0)
            if grown:
                # sums in microseconds, so every count stays an integer
                out[d.get(by, "")] += round(grown * 1e6) if name.endswith("_sum") else int(grown)
    return out


@dataclasses.dataclass
class Run:
    root: str
    admin_key: str
    result: LoadTestResult
    before: Series
    after: Series

    @property
    def report(self) -> LoadTestReport:
        return self.result.report


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    settings = dataclasses.replace(SETTINGS, state_dir=tmp_path_factory.mktemp("state"))
    with local_fleet_host(FLEET, settings) as (root, admin_key):
        assert admin_key is not None
        yield root, admin_key


@pytest.fixture(scope="module")
def run(fleet: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Run:
    root, admin_key = fleet
    before = _scrape(root)
    plan = LoadTestPlan(host=root, workload_path=WORKLOAD, shape=SHAPE,
                        out_dir=tmp_path_factory.mktemp("report"), admin_key=admin_key)  # fmt: skip
    result = run_loadtest(plan)
    return Run(root, admin_key, result, before, _scrape(root))


def test_the_report_exists(run: Run) -> None:
    r = run.result
    assert LoadTestReport.model_validate_json(r.report_json.read_text()) == run.report
    text = r.report_md.read_text()
    assert text.startswith("# Load test: ")
    for plot in r.plots:
        assert plot.read_bytes().startswith(b"\x89PNG") and f"]({plot.name})" in text
    assert (r.report_json.parent / "locust.html").exists()  # Locust's own report, too


def test_every_workload_ran_and_was_served(run: Run) -> None:
    names = [w.name for w in load_workload(WORKLOAD).workloads]
    assert run.report.workloads_ran == names
    for w in run.report.by_workload:
        assert w.succeeded > 0, f"{w.name}: nothing succeeded ({w.requests} requests)"
    pools = {w.name: set(w.pools) for w in run.report.by_workload}
    assert pools["long-context"] == {"gemma-4-26b-a4b"}  # past the small pools' 32K
    assert pools["audio"] <= {"gemma-4-e2b", "gemma-4-e4b"}
    assert run.report.by_workload[-1].ttft.count > 0  # streamed: TTFT measured


def test_no_request_failed_but_for_expected_429s_of_the_limited_team(run: Run) -> None:
    report = run.report
    assert set(report.errors_by_type) <= EXPECTED_429, report.errors_by_type
    assert list(report.rate_limited_by_team) == ["lt-ci-limited"]
    assert report.totals.rate_limited > 0  # 4 requests a minute: the limit was reached
    # each 429 names its request with the id Ray Serve's proxy gave it (to find its trace)
    ids = report.error_examples["rate_limit_exceeded"].request_ids
    assert len(ids) == len(set(ids)) >= 1 and all(ids)


def test_the_reports_figures_match_the_gateways_counters(run: Run) -> None:
    report, before, after = run.report, run.before, run.after
    requests = "gemma_fleet_gateway_requests_total"
    by_team = {t.name: t for t in report.by_team}
    assert _grown(before, after, requests, endpoint=APIS, status="200", by="team") == {
        t: s.succeeded for t, s in by_team.items() if s.succeeded
    }
    assert _grown(before, after, requests, endpoint=APIS, status="429", by="team") == {
        t: s.rate_limited for t, s in by_team.items() if s.rate_limited
    }
    served = {p.name: p.succeeded for p in report.by_pool if p.succeeded}
    assert _grown(before, after, requests, endpoint=APIS, status="200", by="pool") == served
    rejected = _grown(before, after, "gemma_fleet_gateway_rejections_total", status="429",
                      reason="rate_limit", by="team")  # fmt: skip
    assert rejected == {t: sum(c.values()) for t, c in report.rate_limited_by_team.items()}
    for kind in ("prompt", "completion"):
        tokens = _grown(before, after, "gemma_fleet_gateway_tokens_total", kind=kind, by="team")
        assert tokens == {
            t: getattr(s, f"{kind}_tokens") for t, s in by_team.items() if s.succeeded
        }
    # Latency: the gateway saw every streamed first token the report timed, and its clock runs
    # inside the client's (the client's figures add the proxy and the network, little else).
    ttft_count = _grown(before, after, "gemma_fleet_gateway_time_to_first_token_seconds_count",
                        by="pool")  # fmt: skip
    e2e_sum = _grown(before, after, "gemma_fleet_gateway_request_duration_seconds_sum",
                     endpoint=APIS, by="pool")  # fmt: skip
    for pool in report.by_pool:
        if not pool.succeeded:
            continue
        assert ttft_count[pool.name] == pool.ttft.count
        assert pool.e2e.mean is not None
        gateway_mean = e2e_sum[pool.name] / 1e6 / pool.succeeded
        assert gateway_mean <= pool.e2e.mean + 0.005
        assert pool.e2e.mean - gateway_mean < 0.5
    # and the report's own cross-check agrees
    assert report.gateway is not None and report.gateway.all_match


def test_the_cli_runs_a_shape_against_the_same_fleet(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "cli-report"
    done = subprocess.run(
        [sys.executable, "-m", "gemma_fleet.cli", "loadtest", "--host", run.root,
         "--workload", str(WORKLOAD), "--shape", "step", "--duration", "10s", "--users", "4",
         "--out", str(out), "--admin-key", run.admin_key],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(out / "report.md") in done.stdout.replace("\n", "")
    # 4 users leave four of the eight workloads without one: said before the run, and so it was
    said = " ".join(done.stdout.split())
    left_out = "long-context, vision, tool-loop, limited-pdf"
    assert f"At 4 users Locust gives no user to {left_out}" in said
    report = LoadTestReport.model_validate_json((out / "report.json").read_text())
    assert report.shape.kind == "step" and report.totals.requests > 0
    assert {"long-context", "vision", "tool-loop", "limited-pdf"} <= set(report.not_run)


def test_strict_exits_1_when_an_slo_is_missed(run: Run, tmp_path: Path) -> None:
    """What a CI gate relies on: `--strict` fails the job when the SLOs do not hold (the
    root command used to drop the exit status, so a missed SLO exited 0)."""
    workload = yaml.safe_load(WORKLOAD.read_text())
    workload["slo"] = {"ttft_s": 1e-6, "tpot_s": 1e-6, "e2e_s": 1e-6}  # nothing meets it
    for w in workload["workloads"][1:]:  # one workload, so that 2 users run all of it
        w["weight"] = 0
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(yaml.safe_dump(workload))
    done = subprocess.run(
        [sys.executable, "-m", "gemma_fleet.cli", "loadtest", "--host", run.root,
         "--workload", str(impossible), "--shape", "step", "--duration", "5s", "--users", "2",
         "--out", str(tmp_path / "report"), "--admin-key", run.admin_key, "--strict"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 1, (done.stdout[-2000:], done.stderr[-2000:])
    report = LoadTestReport.model_validate_json((tmp_path / "report" / "report.json").read_text())
    assert report.totals.requests > 0 and report.verdict != "SLOs hold"
