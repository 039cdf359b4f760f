"""`gemma-fleet drain`: the fleet's gateway stops accepting requests and finishes the answers in
flight. The Helm chart runs it as the Ray head pod's preStop hook: the gateway replicas go
down with the head, and without it every answer in flight was cut."""

from __future__ import annotations

import os
import threading
import time

import typer

from gemma_fleet.cli.errors import CliError


def drain_command(
    timeout: float = typer.Option(
        600.0,
        "--timeout",
        help="seconds to wait for the answers in flight (the chart passes "
        "the longest drain_timeout_s of its pools)",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="the Ray cluster; default: $RAY_ADDRESS (KubeRay sets it in "
        "every Ray pod), else the cluster this machine runs",
    ),
    app_name: str | None = typer.Option(
        None, "--app", help="the Serve application; default: the fleet's (gemma-fleet)"
    ),
) -> None:
    """Make the gateway refuse new requests (503 with Retry-After, which the SDKs retry; /ready
    fails) and wait until no replica has an answer in flight. Exit 0 once drained, 1 when it
    gave up (time ran out, or the gateway did not answer)."""
    if not timeout > 0:
        raise CliError(f"--timeout must be more than 0 seconds, not {timeout}")
    # Imported here: Ray takes seconds to import, and the other commands do not need it.
    import ray

    from gemma_fleet.deployments.fleet.draining import drain_gateway, gateway_handle
    from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

    app_name = app_name or FLEET_APP_NAME
    started = time.monotonic()
    try:
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or "auto",
            namespace="gemma-fleet",
            log_to_driver=False,
        )
    except Exception as exc:  # no cluster there: nothing to drain, and stopping goes on
        typer.echo(f"gemma-fleet drain: no Ray cluster to drain ({exc})", err=True)
        raise typer.Exit(1) from None
    try:
        gateway = gateway_handle(app_name)
        left = None
        if gateway is not None:
            left = drain_gateway(gateway, started + timeout, threading.Event())
    finally:
        ray.shutdown()
    took = time.monotonic() - started
    if left == 0:
        typer.echo(f"gemma-fleet drain: {app_name} drained in {took:.0f} s")
        return
    why = (
        "its gateway did not answer"
        if left is None
        else f"{left} answers still in flight after {took:.0f} s"
    )
    typer.echo(f"gemma-fleet drain: gave up on {app_name}: {why}", err=True)
    raise typer.Exit(1)
