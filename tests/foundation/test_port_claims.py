"""Two fleet commands started on the same ports within the minute before Ray binds them: the
second is refused at once, naming the options, instead of both fleets sharing the port."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from redis_server import free_port

from gemma_fleet.cli.errors import CliError
from gemma_fleet.cli.ports import require_free_ports

HOLD = """
import sys
from gemma_fleet.cli.ports import require_free_ports
claims = require_free_ports("127.0.0.1", int(sys.argv[1]), int(sys.argv[2]))
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port(), free_port()


@pytest.fixture
def first_fleet(ports: tuple[int, int]) -> Iterator[subprocess.Popen[str]]:
    """Another process that passed the check and has not bound anything yet, as `up` while Ray
    starts."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, *map(str, ports)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.mark.skipif(sys.platform != "linux", reason="claims are Linux abstract sockets")
def test_a_second_fleet_on_claimed_ports_is_refused_until_the_first_ends(
    ports: tuple[int, int], first_fleet: subprocess.Popen[str]
) -> None:
    http, gcs = ports
    with pytest.raises(CliError) as refused:
        require_free_ports("127.0.0.1", http, gcs)
    assert str(refused.value) == (
        "taken by another fleet on this machine, starting or running (`gemma-fleet up` or "
        f"`loadtest --local`): --port {http} (HTTP API on 127.0.0.1), --ray-port {gcs} (Ray "
        "GCS): stop it or pick free ports with those options"
    )
    first_fleet.kill()  # however it ends, its claims go with it
    first_fleet.wait(10)
    claims = require_free_ports("127.0.0.1", http, gcs)
    for claim in claims:
        claim.close()


def test_a_listener_on_the_port_is_named_as_before(ports: tuple[int, int]) -> None:
    http, gcs = ports
    with (
        socket.create_server(("127.0.0.1", http)),
        pytest.raises(CliError, match=rf"already in use: --port {http} \(HTTP API"),
    ):
        require_free_ports("127.0.0.1", http, gcs)
    # the refused check let go of what it had claimed
    for claim in require_free_ports("127.0.0.1", http, gcs):
        claim.close()


def test_haproxys_ports_are_checked_on_every_interface(ports: tuple[int, int]) -> None:
    """HAProxy (the fleet's HTTP front) also binds a stats page and a metrics exporter on every
    interface; a listener there made Ray's HAProxy crash at start, deep in a Ray traceback."""
    http, gcs = ports
    stats, metrics = free_port(), free_port()
    with (
        socket.create_server(("0.0.0.0", stats)),
        pytest.raises(CliError, match=rf"already in use: --haproxy-stats-port {stats} \(HAProxy"),
    ):
        require_free_ports(
            "127.0.0.1", http, gcs, haproxy_stats_port=stats, haproxy_metrics_port=metrics
        )
    with (
        socket.create_server(("0.0.0.0", metrics)),
        pytest.raises(CliError, match=rf"--haproxy-metrics-port {metrics} \(HAProxy metrics\)"),
    ):
        require_free_ports(
            "127.0.0.1", http, gcs, haproxy_stats_port=stats, haproxy_metrics_port=metrics
        )
