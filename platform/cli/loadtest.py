"""`gemma-fleet loadtest`: run a workload mix against an endpoint under a load shape, headless,
and write the SLO report (report.md with PNG plots, report.json)."""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.markup import escape

from gemma_fleet.cli.console import new_console
from gemma_fleet.cli.credential_options import credential_from, file_option
from gemma_fleet.cli.errors import CliError
from gemma_fleet.cli.ports import (
    haproxy_port_options,
    require_free_ports,
    require_free_state_dir,
)
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.loadtest.markdown import coverage_warnings, percent
from gemma_fleet.loadtest.provision import ProvisionError
from gemma_fleet.loadtest.runner import LoadTestError, LoadTestPlan, local_fleet_host, run_loadtest
from gemma_fleet.loadtest.shapes import MAX_USERS, SHAPES, ShapeSpec, parse_duration
from gemma_fleet.loadtest.staffing import staffing, unstaffed_warning
from gemma_fleet.loadtest.workload import WorkloadFileError, load_workload

DEFAULT_USERS = 10

HAPROXY_STATS, HAPROXY_METRICS = haproxy_port_options("with --local: ")


def loadtest_command(
    workload: Path = typer.Option(
        ..., "--workload", "-w", help="workload file (YAML), e.g. loadtest/workloads/mix.yaml"
    ),
    host: str | None = typer.Option(
        None, "--host", help="the gateway's URL, e.g. http://127.0.0.1:8000 (or use --local)"
    ),
    shape: str = typer.Option("constant", "--shape", help="constant, step, spike or diurnal"),
    duration: str = typer.Option("5m", "--duration", help="how long, e.g. 90s, 10m, 1h"),
    users: int | None = typer.Option(
        None,
        "--users",
        help=f"peak virtual users (default: {DEFAULT_USERS}, or as many as it takes to give every "
        "workload one)",
    ),
    spawn_rate: float = typer.Option(5.0, "--spawn-rate", help="users started per second"),
    out: Path | None = typer.Option(
        None, "--out", help="report folder; default loadtest-report/<UTC time>"
    ),
    admin_key: str | None = typer.Option(
        None,
        "--admin-key",
        envvar="GEMMA_FLEET_ADMIN_KEY",
        help="create the workload's teams and keys through the admin API",
    ),
    admin_key_file: Path | None = file_option(
        "--admin-key", "GEMMA_FLEET_ADMIN_KEY", "the admin credential"
    ),
    api_key: str | None = typer.Option(
        None,
        "--api-key",
        envvar="GEMMA_FLEET_API_KEY",
        help="without --admin-key: the key every team's users send",
    ),
    metrics_token: str | None = typer.Option(
        None,
        "--metrics-token",
        envvar="GEMMA_FLEET_METRICS_TOKEN",
        help="the gateway's metrics token, for the cross-check against its /metrics (when it "
        "sets GEMMA_FLEET_METRICS_TOKEN)",
    ),
    metrics_token_file: Path | None = file_option(
        "--metrics-token", "GEMMA_FLEET_METRICS_TOKEN", "the gateway's metrics token"
    ),
    request_timeout: float = typer.Option(300, "--request-timeout", help="seconds per request"),
    local: bool = typer.Option(
        False, "--local", help="start the local fleet first and tear it down afterwards"
    ),
    fleet: Path | None = typer.Option(
        None, "--fleet", "-f", help="with --local: the fleet file (default: the default fleet)"
    ),
    port: int = typer.Option(8000, "--port", help="with --local: the API's HTTP port"),
    ray_port: int = typer.Option(6790, "--ray-port", help="with --local: the Ray GCS port"),
    haproxy_stats_port: int = HAPROXY_STATS,
    haproxy_metrics_port: int = HAPROXY_METRICS,
    state_dir: Path = typer.Option(
        LocalFleetSettings().state_dir,
        "--state-dir",
        help="with --local: the fleet's team store folder (one running fleet per folder)",
    ),
    strict: bool = typer.Option(
        False,
        "--strict",
        help="exit 1 when an SLO is missed, a request failed unexpectedly or a workload went "
        "unmeasured (refused before the run when too few --users leave a workload without one)",
    ),
) -> None:
    """Load-test an endpoint with Locust and report whether the SLOs hold."""
    console = new_console()
    # A line per admin call and /metrics read is noise (Ray's driver logging, which --local
    # sets up, would print them; "409 Conflict" for a team that already exists looks alarming).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if (host is None) == (not local):
        raise CliError("give either --host URL or --local")
    if shape not in SHAPES:
        raise CliError(f"--shape {shape!r}: one of {', '.join(SHAPES)}")
    try:
        loaded = load_workload(workload)
    except WorkloadFileError as exc:
        raise CliError(str(exc)) from exc
    if users is None:
        users = min(MAX_USERS, max(DEFAULT_USERS, staffing(loaded, DEFAULT_USERS).users_for_all))
    try:
        spec = ShapeSpec(
            kind=shape,
            duration_s=parse_duration(duration),
            users=users,
            spawn_rate=spawn_rate,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "--" + str(first["loc"][0]).replace("_", "-")
        raise CliError(f"{name}: {first['msg']}") from exc
    except ValueError as exc:
        raise CliError(f"--duration: {exc}") from exc
    if (unstaffed := unstaffed_warning(loaded, spec)) is not None:
        if strict:  # it would fail after the whole run; say so before it
            raise CliError(f"--strict: {unstaffed}")
        console.print(f"[yellow]{escape(unstaffed[0].upper() + unstaffed[1:])}.[/yellow]")
    # A user thinks before each request, its first included: a test shorter than the longest
    # think may end before the workload sends anything.
    if slow := [w for w in loaded.active if w.think_time_s[1] > spec.duration_s]:
        names = ", ".join(f"{w.name} (think {w.think_time_s[1]:g} s)" for w in slow)
        warning = (
            f"A {spec.duration_s:g} s test may end before {names} sends a first request: "
            "each user thinks before every request."
        )
        console.print(f"[yellow]{escape(warning)}[/yellow]")
    admin_key = credential_from(
        admin_key, admin_key_file, option="--admin-key", variable="GEMMA_FLEET_ADMIN_KEY"
    )
    metrics_token = credential_from(
        metrics_token,
        metrics_token_file,
        option="--metrics-token",
        variable="GEMMA_FLEET_METRICS_TOKEN",
    )
    out = out or Path("loadtest-report") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with ExitStack() as stack:
        if local:
            settings = LocalFleetSettings(
                http_port=port,
                gcs_port=ray_port,
                haproxy_stats_port=haproxy_stats_port,
                haproxy_metrics_port=haproxy_metrics_port,
                state_dir=state_dir,
            )
            claims = require_free_ports(
                settings.http_host,
                port,
                ray_port,
                haproxy_stats_port=haproxy_stats_port,
                haproxy_metrics_port=haproxy_metrics_port,
            )
            for claim in claims:
                stack.callback(claim.close)  # held while the fleet runs: see require_free_ports
            require_free_state_dir(state_dir)
            console.print("starting the local fleet ...")
            root, local_admin = stack.enter_context(local_fleet_host(fleet, settings))
            host, admin_key = root, admin_key or local_admin
        assert host is not None
        plan = LoadTestPlan(
            host=host,
            workload_path=workload,
            shape=spec,
            out_dir=out,
            admin_key=admin_key,
            api_key=api_key,
            metrics_token=metrics_token,
            request_timeout_s=request_timeout,
        )
        console.print(f"{spec.kind} load, up to {users} users for {spec.duration_s:.0f} s ...")
        try:
            result = run_loadtest(plan)
        except (LoadTestError, ProvisionError) as exc:
            raise CliError(str(exc)) from exc
    r = result.report
    t = r.totals
    console.print(
        f"[bold]{r.verdict}[/bold]: {t.requests} requests, SLO attainment "
        f"{percent(t.slo_attainment)} (target {percent(r.slo_target)}), goodput "
        f"{t.goodput_rps:.2f} req/s, {t.rate_limited} 429s, {t.errors} other errors"
    )
    for warning in coverage_warnings(r):
        console.print(f"[yellow]{escape(warning)}[/yellow]", highlight=False)
    if r.gateway is None:
        console.print(f"[yellow]{escape(r.gateway_note)}[/yellow]", highlight=False)
    elif not r.gateway.all_match:
        console.print(f"[yellow]{r.gateway.mismatches} figure(s) differ from /metrics[/yellow]")
    console.print(f"report: {result.report_md}")
    if strict and (r.verdict != "SLOs hold" or t.errors or r.not_run or r.cut_short):
        raise typer.Exit(1)
