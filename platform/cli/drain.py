"""`gemma-fleet drain` and `gemma-fleet drain-node`: what the Helm chart's pods run before they
stop (preStop hooks). `drain`, in the Ray head pod: the fleet's gateway stops accepting
requests and finishes the answers in flight (the gateway replicas go down with the head, and
without it every answer in flight was cut). `drain-node`, in a GPU worker pod: Serve moves the
node's replicas to other nodes before the pod goes."""

from __future__ import annotations

import os
import threading
import time

import typer

from gemma_fleet.cli.errors import CliError

_ADDRESS_HELP = (
    "the Ray cluster; default: $RAY_ADDRESS (KubeRay sets it in every Ray pod), else the "
    "cluster this machine runs"
)


def _connect(address: str | None, command: str) -> None:
    """Connect to the Ray cluster, or exit 1 with one line: with no cluster there is nothing to
    drain, and the pod stops all the same."""
    import ray

    try:
        ray.init(
            address=address or os.environ.get("RAY_ADDRESS") or "auto",
            namespace="gemma-fleet",
            log_to_driver=False,
        )
    except Exception as exc:
        typer.echo(f"gemma-fleet {command}: no Ray cluster to drain ({exc})", err=True)
        raise typer.Exit(1) from None


def drain_command(
    timeout: float = typer.Option(
        600.0,
        "--timeout",
        help="seconds to wait for the answers in flight (the chart passes the longest "
        "drain_timeout_s of its pools)",
    ),
    address: str | None = typer.Option(None, "--address", help=_ADDRESS_HELP),
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
    _connect(address, "drain")
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


def drain_node_command(
    deadline: float = typer.Option(
        ...,
        "--deadline",
        help="seconds until the node is stopped for good (the chart passes its pods' grace "
        "period less a margin); Serve stops a replica at once when this is shorter than its "
        "pool's drain_timeout_s",
    ),
    node_id: str | None = typer.Option(
        None, "--node-id", help="the Ray node (hex id); default: the node this command runs on"
    ),
    address: str | None = typer.Option(None, "--address", help=_ADDRESS_HELP),
) -> None:
    """Drain a Ray node: Serve starts replacements of its replicas on other nodes and stops
    them there once the replacements run (each finishing its answers in flight), and this
    waits until none is left. Exit 0 when none is left, 1 when Ray refused the drain or
    replicas remain at the deadline."""
    if not deadline > 0:
        raise CliError(f"--deadline must be more than 0 seconds, not {deadline}")
    import ray

    from gemma_fleet.deployments.fleet.draining import DrainRefused, drain_node

    started = time.monotonic()
    _connect(address, "drain-node")
    try:
        node = node_id or ray.get_runtime_context().get_node_id()
        try:
            left = drain_node(node, deadline, threading.Event())
        except DrainRefused as exc:
            typer.echo(f"gemma-fleet drain-node: Ray refused to drain {node}: {exc}", err=True)
            raise typer.Exit(1) from None
    finally:
        ray.shutdown()
    took = time.monotonic() - started
    if left == 0:
        typer.echo(f"gemma-fleet drain-node: no replica left on {node} after {took:.0f} s")
        return
    typer.echo(
        f"gemma-fleet drain-node: {left} replicas still on {node} after {took:.0f} s", err=True
    )
    raise typer.Exit(1)
