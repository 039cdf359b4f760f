"""`gemma-fleet up`: run a fleet on this machine until Ctrl-C.

Starts a local Ray cluster whose nodes mirror the fleet's GPU node pools, deploys every model
pool, shows replicas coming up, prints where to send requests, and on SIGINT/SIGTERM shuts Serve
down and stops every node it started.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from types import FrameType

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from gemma_fleet.cli.console import new_console
from gemma_fleet.cli.errors import CliError
from gemma_fleet.cli.ports import (
    haproxy_port_options,
    require_free_ports,
    require_free_state_dir,
)
from gemma_fleet.deployments.fleet.progress import FleetProgress, FleetStartError
from gemma_fleet.deployments.fleet.run import RunningFleet, run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools import EngineKind, FleetError, default_fleet_path, load_fleet

HAPROXY_STATS, HAPROXY_METRICS = haproxy_port_options()


class _Stop(Exception):
    """SIGTERM while starting: unwinds like Ctrl-C so the fleet is taken down."""


def progress_table(progress: FleetProgress) -> Table:
    """One row per pool: Serve's status and replicas running of those starting."""
    table = Table(title=f"gemma-fleet: {progress.app_status} ({progress.elapsed_s:.0f} s)")
    for column in ("pool", "status", "running", "replica states", "message"):
        table.add_column(column)
    for pool in progress.pools:
        states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(pool.replica_states.items()))
        table.add_row(
            pool.name, pool.status, f"{pool.running}/{pool.target}", states, pool.message[:60]
        )
    return table


def _summary(console: Console, running: RunningFleet, state_dir: Path) -> None:
    fleet = running.fleet
    table = Table(title="Model pools")
    # The model id is what clients send: never cut or wrapped, whatever the terminal's width.
    table.add_column(
        "model id", no_wrap=True, min_width=max(len(p.name) for p in fleet.model_pools)
    )
    for column in ("model", "quant", "tp", "GPU", "context", "engine"):
        table.add_column(column, overflow="fold")  # folded, never cut short
    for pool in fleet.model_pools:
        gpu = fleet.node_pool(pool.node_pool).gpu
        table.add_row(
            pool.name,
            pool.model,
            pool.quant,
            str(pool.tp),
            f"{gpu} ({pool.node_pool})",
            f"{pool.max_model_len:,}",
            pool.engine.value,
        )
    console.print(table)
    first = running.models[0]
    # soft_wrap: lines meant to be copied (the key, the curl command) are never broken by
    # Console; a hard line break inside the quoted header made the pasted command send a
    # broken key.
    console.print(
        f"OpenAI-compatible API: [bold]{running.base_url}[/bold]  (models: /v1/models)",
        soft_wrap=True,
    )
    auth = ""
    if running.teams.api_key is not None:
        console.print(f"Key of team 'local': [bold]{running.teams.api_key}[/bold]", soft_wrap=True)
        console.print(
            f"Admin key (teams, keys, usage: gemma-fleet teams --help): {state_dir / 'admin-key'}",
            soft_wrap=True,
        )
        auth = f"-H 'Authorization: Bearer {running.teams.api_key}' "
    console.print(
        f"  curl {running.base_url}/chat/completions {auth}-H 'Content-Type: application/json' "
        f'-d \'{{"model": "{first}", "messages": [{{"role": "user", "content": "Hi"}}]}}\'',
        soft_wrap=True,
        markup=False,
    )
    console.print("Ctrl-C stops the fleet.")


def up_command(
    fleet: Path | None = typer.Option(
        None, "--fleet", "-f", help="fleet file (YAML); default: the shipped default fleet"
    ),
    engine: EngineKind | None = typer.Option(
        None, "--engine", help="serve every pool with this engine instead of the file's choice"
    ),
    port: int = typer.Option(8000, "--port", help="HTTP port of the OpenAI-compatible API"),
    ray_port: int = typer.Option(6790, "--ray-port", help="port of the local Ray cluster's GCS"),
    worker_ports: str = typer.Option(
        "23000-23999", "--worker-ports", help="port range Ray workers bind, LOW-HIGH"
    ),
    ray_temp_dir: Path = typer.Option(
        Path("/tmp/gemma-fleet-ray"), "--ray-temp-dir", help="Ray's session and log folder"
    ),
    haproxy_stats_port: int = HAPROXY_STATS,
    haproxy_metrics_port: int = HAPROXY_METRICS,
    ready_file: Path | None = typer.Option(
        None,
        "--ready-file",
        help="write {base_url, models, api_key, admin_key, pid} as JSON here (owner-only) once "
        "the fleet is up (for scripts)",
    ),
    timeout: float = typer.Option(600, "--timeout", help="seconds to wait for replicas"),
    state_dir: Path = typer.Option(
        Path.home() / ".gemma-fleet",
        "--state-dir",
        help="team store data, the admin key and the local team's key (kept between runs)",
    ),
    auth: bool = typer.Option(
        True, "--auth/--no-auth", help="require team keys (--no-auth: an open API, no quotas)"
    ),
) -> None:
    """Run a fleet locally (GPU simulator by default) until Ctrl-C or SIGTERM."""
    console = new_console()
    try:
        spec = load_fleet(fleet or default_fleet_path())
    except FleetError as exc:
        raise CliError(str(exc)) from exc
    try:
        low, high = (int(p) for p in worker_ports.split("-"))
        settings = LocalFleetSettings(
            http_port=port,
            gcs_port=ray_port,
            min_worker_port=low,
            max_worker_port=high,
            temp_dir=ray_temp_dir,
            haproxy_stats_port=haproxy_stats_port,
            haproxy_metrics_port=haproxy_metrics_port,
            ready_timeout_s=timeout,
            state_dir=state_dir,
            auth=auth,
        )
    except ValueError as exc:
        raise CliError(
            f"--worker-ports {worker_ports!r}: expected LOW-HIGH, e.g. 23000-23999"
        ) from exc
    # Held until this command ends: a second fleet started meanwhile on these ports is refused.
    claims = require_free_ports(  # noqa: F841
        settings.http_host,
        port,
        ray_port,
        haproxy_stats_port=haproxy_stats_port,
        haproxy_metrics_port=haproxy_metrics_port,
    )
    if auth:
        require_free_state_dir(state_dir)
    stop = threading.Event()
    fleets: list[RunningFleet] = []  # the fleet, once it is up

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # Before the fleet is up, unwind out of start-up (run_fleet's exit takes it down);
        # once it is up, wake the main loop. A second signal while stopping stops without
        # waiting for the answers in flight; the shutdown itself still runs to the end.
        if stop.is_set():
            for running in fleets:
                running.cut_drain.set()
            return
        stop.set()
        if not fleets:
            raise _Stop

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with (
            Live(console=console, transient=True) as live,
            run_fleet(
                spec,
                engine=engine,
                settings=settings,
                on_progress=lambda p: live.update(progress_table(p)),
            ) as running,
        ):
            live.stop()
            fleets.append(running)
            _summary(console, running, state_dir)
            if ready_file is not None:
                # Holds the local keys: owner-only, like the state folder they come from.
                payload = {
                    "base_url": running.base_url,
                    "models": running.models,
                    "api_key": running.teams.api_key,
                    "admin_key": running.teams.admin_key,
                }
                ready_file.touch(mode=0o600)
                ready_file.write_text(json.dumps({**payload, "pid": os.getpid()}))
            while not stop.wait(0.5):
                pass
            console.print(
                "stopping the fleet: new requests get 503, those in flight are answered first "
                f"(up to {spec.longest_drain_s:g} s; Ctrl-C again stops without them)"
            )
    except _Stop:
        console.print("stopped before the fleet was up")
    except FleetStartError as exc:
        console.print(f"[red]the fleet did not start[/red]\n{exc}")
        raise typer.Exit(1) from exc
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    console.print("fleet stopped")
