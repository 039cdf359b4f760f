"""Checks that the ports and the state folder a local fleet is about to use are free, before
Ray starts.

Ray Serve's HTTP proxy binds with SO_REUSEPORT, so a second fleet on a port a first one holds
does not fail: both listen and the kernel spreads connections between two fleets with
different keys. A GCS port in use makes Ray's head assert with a traceback about session
names. A plain bind (no SO_REUSEPORT) is refused by any listener, so it finds both.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from gemma_fleet.cli.errors import CliError
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


def require_free_ports(http_host: str, http_port: int, ray_port: int) -> list[socket.socket]:
    """Raise a one-line CliError naming each option whose port another process listens on, or
    that another fleet command on this machine has claimed. Return this command's claims:
    Ray binds the ports up to a minute after this check, and until the claims are closed (at
    the latest when the process ends) a second `up` or `loadtest --local` cannot pass it."""
    claims, claimed, listened = [], [], []
    for option, port, what, host in (
        ("--port", http_port, f"HTTP API on {http_host}", http_host),
        ("--ray-port", ray_port, "Ray GCS", ""),
    ):
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
