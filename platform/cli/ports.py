"""Checks that the ports and the state folder a local fleet is about to use are free, before
Ray starts.

Ray Serve's HTTP front (HAProxy, or its proxy actor) binds with SO_REUSEPORT, so a second
fleet on a port a first one holds does not fail: both listen and the kernel spreads
connections between two fleets with different keys. A GCS port in use makes Ray's head assert
with a traceback about session names. A plain bind (no SO_REUSEPORT) is refused by any
listener, so it finds both.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import typer

from gemma_fleet.cli.errors import CliError
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.fleet.team_store import store_in_use


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (host, port); host "" means every interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a closed connection's TIME_WAIT is not "in use"; a listener still is.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def haproxy_port_options(when: str = "") -> tuple[Any, Any]:
    """The `--haproxy-stats-port` and `--haproxy-metrics-port` options of a command that
    starts a local fleet; `when` prefixes their help ("with --local: ")."""
    stats = typer.Option(
        LocalFleetSettings.haproxy_stats_port,
        "--haproxy-stats-port",
        help=f"{when}port of the stats page of HAProxy (Ray Serve's HTTP front), every interface",
    )
    metrics = typer.Option(
        LocalFleetSettings.haproxy_metrics_port,
        "--haproxy-metrics-port",
        help=f"{when}port of HAProxy's Prometheus exporter, every interface",
    )
    return stats, metrics


def require_free_ports(
    http_host: str,
    http_port: int,
    ray_port: int,
    *,
    haproxy_stats_port: int | None = None,
    haproxy_metrics_port: int | None = None,
) -> list[socket.socket]:
    """Raise a one-line CliError naming each option whose port another process listens on, or
    that another fleet command on this machine has claimed. Return this command's claims:
    Ray binds the ports up to a minute after this check, and until the claims are closed (at
    the latest when the process ends) a second `up` or `loadtest --local` cannot pass it.
    The HAProxy ports, when given, are checked on every interface, where HAProxy binds them."""
    checks = [
        ("--port", http_port, f"HTTP API on {http_host}", http_host),
        ("--ray-port", ray_port, "Ray GCS", ""),
    ]
    if haproxy_stats_port is not None:
        checks.append(("--haproxy-stats-port", haproxy_stats_port, "HAProxy stats page", ""))
    if haproxy_metrics_port is not None:
        checks.append(("--haproxy-metrics-port", haproxy_metrics_port, "HAProxy metrics", ""))
    claims, claimed, listened = [], [], []
    for option, port, what, host in checks:
        if (claim := _claim(port)) is None:
            claimed.append(f"{option} {port} ({what})")
            continue
        claims.append(claim)
        if port_in_use(host, port):
            listened.append(f"{option} {port} ({what})")
    problems = []
    if listened:
        problems.append(
            f"already in use: {', '.join(listened)}; another fleet or service listens there "
            "(`ss -ltnp` shows which)"
        )
    if claimed:
        problems.append(
            "taken by another fleet on this machine, starting or running (`gemma-fleet up` "
            f"or `loadtest --local`): {', '.join(claimed)}"
        )
    if problems:
        for claim in claims:
            claim.close()
        raise CliError(f"{'; '.join(problems)}: stop it or pick free ports with those options")
    return claims


def _claim(port: int) -> socket.socket | None:
    """A socket bound to an abstract Unix name for `port` (Linux: no file, released when the
    process ends however it ends); None when another process holds it. Elsewhere nothing is
    claimed (an empty socket), and only the listening check applies."""
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if sys.platform != "linux":
        return claim
    try:
        claim.bind(f"\0gemma-fleet-port-{port}")
    except OSError:
        claim.close()
        return None
    return claim


def require_free_state_dir(state_dir: Path) -> None:
    """Raise a one-line CliError when a running fleet's team store uses `state_dir`.

    A second fleet on the same folder (other ports, or `loadtest --local` beside `up`) would
    run a second redis-server on the first one's append-only file. The team store refuses
    that too, but only once the command has begun starting the fleet; this says which option
    to change, before anything starts."""
    if (sock_path := store_in_use(state_dir)) is not None:
        raise CliError(
            f"a running fleet uses the state folder {state_dir} (its Redis listens on "
            f"{sock_path}): stop it, or give this one another --state-dir"
        )
