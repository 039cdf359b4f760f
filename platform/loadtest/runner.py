"""Run a load test end to end: teams and keys, the gateway's counters before, Locust headless in
its own process (gevent must not patch this one, which may also be driving a local fleet), the
counters after, then the report (JSON, Markdown, PNG plots)."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gemma_fleet.deployments.fleet.progress import FleetProgress
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.loadtest import gateway_counters
from gemma_fleet.loadtest.markdown import render_markdown
from gemma_fleet.loadtest.plots import write_plots
from gemma_fleet.loadtest.provision import provisioned_teams
from gemma_fleet.loadtest.records import read_records
from gemma_fleet.loadtest.report import LoadTestReport, build_report
from gemma_fleet.loadtest.settings import DEFAULT_KEY_ENV, LocustSettings
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.workload import WorkloadFile, load_workload

log = logging.getLogger(__name__)

LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass(frozen=True)
class LoadTestPlan:
    """What to run: where, which workload, which shape, where the report goes, which keys."""

    host: str  # the gateway's root URL (with or without /v1)
    workload_path: Path
    shape: ShapeSpec
    out_dir: Path
    admin_key: str | None = None  # create the teams and keys through the admin API
    metrics_token: str | None = None  # the gateway's GEMMA_FLEET_METRICS_TOKEN, if it sets one
    api_key: str | None = None  # else: one key for every team (overrides GEMMA_FLEET_API_KEY)
    request_timeout_s: float = 300.0
    # Users finish the request (or tool loop) they are in when the test ends or ramps down:
    # cutting them off would leave requests the gateway counted and the report did not.
    stop_timeout_s: float = 120.0
    env: dict[str, str] = field(default_factory=dict)  # more environment for Locust

    @property
    def root_url(self) -> str:
        host = self.host.rstrip("/")
        return host[: -len("/v1")] if host.endswith("/v1") else host


@dataclass(frozen=True)
class LoadTestResult:
    report: LoadTestReport
    report_json: Path
    report_md: Path
    plots: list[Path]
    records: Path
    locust_log: Path


class LoadTestError(RuntimeError):
    """The run could not happen (bad workload, unreachable host, Locust failed to start)."""


def _check_up(root_url: str) -> None:
    """One health check: a load test against a gateway that is not up is a mistake to name,
    not something to wait out."""
    try:
        status = httpx.get(root_url + "/health", timeout=10).status_code
    except httpx.HTTPError as exc:
        message = f"{root_url}/health does not answer ({exc}): is the gateway up?"
        raise LoadTestError(message) from None
    if status != 200:
        raise LoadTestError(f"{root_url}/health answers HTTP {status}: is this the gateway?")


def check_keys(plan: LoadTestPlan, settings: LocustSettings, workload: WorkloadFile) -> str | None:
    """Check the keys the users will send, one request per key: `GET /v1/usage?team=NAME`
    needs a key and answers only for the key's own team. A key the gateway refuses would
    fail every request of the run: LoadTestError names it before the run starts, rather than
    a report of nothing but 401s at its end.

    Returns why the gateway will count the run's requests under teams other than the
    workload's (the counter check then sums over the teams), or None when each team sends
    its own key."""
    env = _locust_env(plan, settings)
    teams_of: dict[str | None, list[str]] = {}
    for team in workload.teams:
        teams_of.setdefault(settings.key_of(team.name, workload, env), []).append(team.name)
    elsewhere: list[str] = []
    for key, teams in teams_of.items():
        status, reason = _usage_answer(plan.root_url, key, teams[0])
        if status == 401:
            problem = "refuses the key" if key else "needs a key, and none is set"
            raise LoadTestError(
                f"the gateway {problem} for team {', '.join(teams)} (HTTP 401: {reason}): "
                f"pass a team's key in --api-key / {DEFAULT_KEY_ENV} (or the variable a team's "
                "key_env names), or --admin-key to create the workload's teams and keys"
            )
        if len(teams) > 1:
            elsewhere.append(f"teams {', '.join(teams)} send one key")
        elif status == 403:
            elsewhere.append(f"the key sent for team {teams[0]} is another team's")
        elif status == 404:
            elsewhere.append("the gateway takes no team keys")
        elif status != 200 and teams[0] not in settings.keys:  # provisioned keys are known
            elsewhere.append(f"the team of the key sent for {teams[0]} is unknown ({reason})")
    return "; ".join(elsewhere) or None


def _usage_answer(root_url: str, key: str | None, team: str) -> tuple[int | None, str]:
    """The status of `GET /v1/usage?team=TEAM` with `key` (None when there was no answer),
    and the message of an error."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = root_url + "/v1/usage"
    try:
        answer = httpx.get(url, params={"team": team}, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return None, f"{url} did not answer: {exc}"
    if answer.status_code == 200:
        return 200, ""
    try:
        return answer.status_code, str(answer.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return answer.status_code, f"HTTP {answer.status_code}"


def _scrape(root_url: str, token: str | None) -> tuple[gateway_counters.Reading | None, str]:
    """The gateway's counters now, or None and why they could not be read (the run goes on
    without the cross-check)."""
    try:
        return gateway_counters.scrape(root_url, token=token), ""
    except gateway_counters.ScrapeRefused as exc:
        log.warning("%s: the report will have no cross-check", exc)
        return None, str(exc)
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("cannot read %s/metrics: %s", root_url, exc)
        return None, f"{root_url}/metrics could not be read"


def _locust_env(plan: LoadTestPlan, settings: LocustSettings) -> dict[str, str]:
    """The environment Locust runs with (the users read their keys from it)."""
    env = {**os.environ, **plan.env, **settings.to_env()}
    if plan.api_key:
        env[DEFAULT_KEY_ENV] = plan.api_key
    return env


def run_locust(plan: LoadTestPlan, settings: LocustSettings, log_path: Path) -> int:
    """Locust headless, in a child process, until the shape ends; returns its exit status."""
    env = _locust_env(plan, settings)
    args = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", plan.root_url, "--stop-timeout", f"{math.ceil(plan.stop_timeout_s)}s",
        "--exit-code-on-error", "0", "--only-summary",
        "--csv", str(plan.out_dir / "locust"), "--html", str(plan.out_dir / "locust.html"),
    ]  # fmt: skip
    limit = plan.shape.duration_s + plan.stop_timeout_s + 120
    with log_path.open("w") as out:
        child = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            return child.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait(30)
            raise LoadTestError(f"Locust ran past {limit:.0f} s; see {log_path}") from None
        except BaseException:
            child.terminate()  # Ctrl-C: stop the load, then let the caller tear down
            child.wait(30)
            raise


def run_loadtest(plan: LoadTestPlan) -> LoadTestResult:
    """Run `plan` against a gateway that is up, and write the report into `plan.out_dir`."""
    try:
        workload = load_workload(plan.workload_path)
    except ValueError as exc:
        raise LoadTestError(str(exc)) from exc
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    records = plan.out_dir / "requests.jsonl"
    records.unlink(missing_ok=True)
    locust_log = plan.out_dir / "locust.log"
    _check_up(plan.root_url)
    with ExitStack() as stack:
        keys: dict[str, str] = {}
        if plan.admin_key:
            keys = stack.enter_context(provisioned_teams(plan.root_url, plan.admin_key, workload))
        settings = LocustSettings(
            workload_path=plan.workload_path.resolve(),
            shape=plan.shape,
            records=records,
            keys=keys,
            timeout_s=plan.request_timeout_s,
        )
        teams_elsewhere = check_keys(plan, settings, workload)
        before, before_error = _scrape(plan.root_url, plan.metrics_token)
        started = time.time()
        status = run_locust(plan, settings, locust_log)
        ended = time.time()
        time.sleep(1.0)  # a stream's counters are settled just after its last byte
        # Without the first reading there is nothing to subtract from.
        after, after_error = (None, "")
        if before is not None:
            after, after_error = _scrape(plan.root_url, plan.metrics_token)
    if status != 0:
        tail = locust_log.read_text()[-2000:]
        raise LoadTestError(f"Locust exited with status {status}:\n{tail}")
    got = list(read_records(records))
    comparison = None
    note = ""
    if before is not None and after is not None:
        grown = gateway_counters.delta(before.counters, after.counters)
        comparison = gateway_counters.compare(got, grown, merge_teams=bool(teams_elsewhere))
        note = (
            "Counters are the growth of /metrics between the start and the end of the run, "
            f"summed over {after.heard} gateway replica(s)."
        )
        if teams_elsewhere:
            note += (
                " The gateway counts requests under the team of the key they carry, and "
                f"{teams_elsewhere}: the rows sum over the run's teams."
            )
        if not (before.complete and after.complete):
            note += (
                f" Only {min(before.heard, after.heard)} of {after.running} gateway replicas "
                "answered /metrics in time: the gateway's figures miss the others' share."
            )
    else:
        note = f"{before_error or after_error}: no cross-check."
    report = build_report(
        got,
        workload=workload,
        workload_file=str(plan.workload_path),
        host=plan.root_url,
        shape=plan.shape,
        started=started,
        ended=min(ended, started + plan.shape.duration_s) if got else ended,
        gateway=comparison,
        gateway_note=note,
    )
    return write_report(report, plan.out_dir, records, locust_log)


def write_report(
    report: LoadTestReport, out_dir: Path, records: Path, locust_log: Path
) -> LoadTestResult:
    """report.json, the plots and report.md into `out_dir`."""
    report_json = out_dir / "report.json"
    report_json.write_text(report.model_dump_json(indent=2))
    plots = write_plots(report, out_dir)
    report_md = out_dir / "report.md"
    report_md.write_text(render_markdown(report, [p.name for p in plots]))
    return LoadTestResult(report, report_json, report_md, plots, records, locust_log)


@contextmanager
def local_fleet_host(
    fleet: Path | str | None,
    settings: LocalFleetSettings | None = None,
    on_progress: Callable[[FleetProgress], None] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Start the local fleet (simulated engines unless the fleet file says otherwise) and yield
    its root URL and admin key; tear it down afterwards."""
    from gemma_fleet.deployments.fleet.run import run_fleet

    with run_fleet(fleet, settings=settings, on_progress=on_progress) as running:
        yield running.base_url.removesuffix("/v1"), running.teams.admin_key
