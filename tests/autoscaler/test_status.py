"""The autoscaler's own /metrics and /healthz (autoscaler/status.py), read over real HTTP the
way Prometheus and a kubelet liveness probe read them, and `gemma-fleet autoscale
--status-port` serving them from the real CLI."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from autoscale_process import stop
from prometheus_client.parser import text_string_to_metric_families
from text_endpoint import serving_text

from gemma_fleet.autoscaler.actuators import FleetState, InMemoryActuator
from gemma_fleet.autoscaler.controller import Controller, StepReport
from gemma_fleet.autoscaler.metrics_source import MetricsError
from gemma_fleet.autoscaler.plan import ModelDemand, Plan, Slo
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.autoscaler.status import PREFIX, ControllerStatus, serve_status
from gemma_fleet.cli.main import main
from gemma_fleet.deployments.pools import default_fleet_path, load_fleet
from gemma_fleet.gateway.metrics import GatewayMetrics

FLEET = load_fleet(default_fleet_path())
START = {p.name: p.replicas.start for p in FLEET.model_pools}
# The default fleet: L4 nodes of 2 GPUs at 0.85 per GPU-hour, H100 nodes of 4 at 3.90.
L4_NODE, H100_NODE = 2 * 0.85, 4 * 3.90


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def served() -> Iterator[tuple[ControllerStatus, Clock, str]]:
    clock = Clock()
    status = ControllerStatus(FLEET, stale_after_s=900, clock=clock, wall_clock=lambda: 1.7e9)
    server = serve_status(status, 0, host="127.0.0.1")
    try:
        yield status, clock, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(base: str) -> Samples:
    """Every sample of GET /metrics, keyed by name and sorted labels."""
    reply = httpx.get(f"{base}/metrics", timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def sample(found: Samples, name: str, **labels: str) -> float:
    return found[(PREFIX + name, tuple(sorted(labels.items())))]


def report(
    observed: dict[str, int],
    desired: dict[str, int],
    *,
    applied: bool,
    nodes_now: dict[str, int] | None = None,
    nodes_wanted: dict[str, int] | None = None,
) -> StepReport:
    """A step's report; both node counts default to one node per node pool."""
    one_each = {"l4": 1, "h100": 1}
    return StepReport(
        at=0.0,
        observed=FleetState(replicas=observed, nodes=nodes_now or one_each),
        desired=FleetState(replicas=desired, nodes=nodes_wanted or one_each),
        demand={"gemma-4-E2B": ModelDemand(9.0, 1000, 200)},
        forecast={"gemma-4-E2B": ModelDemand(8.0, 1000, 200)},
        plan=Plan(replicas=desired, nodes={}, cost_per_hour=17.3),
        applied=applied,
    )


def test_metrics_say_what_the_fleet_costs_and_what_the_autoscaler_wants(
    served: tuple[ControllerStatus, Clock, str],
) -> None:
    status, _, base = served
    status.record(StepReport(0.0, FleetState(START), FleetState(START), note="waiting"))
    status.record(report(START, START, applied=False))
    more = {**START, "gemma-4-e2b": 3}
    status.record(report(START, more, applied=True, nodes_wanted={"l4": 2, "h100": 1}))
    found = samples(base)
    assert sample(found, "steps_total", result="waiting") == 1
    assert sample(found, "steps_total", result="applied") == 1
    assert sample(found, "steps_total", result="unchanged") == 1
    assert sample(found, "steps_total", result="failed") == 0
    assert sample(found, "replicas", pool="gemma-4-e2b", state="observed") == 1
    assert sample(found, "replicas", pool="gemma-4-e2b", state="desired") == 3
    assert sample(found, "replica_changes_total", pool="gemma-4-e2b", direction="up") == 2
    assert sample(found, "nodes", node_pool="l4", state="observed") == 1
    assert sample(found, "nodes", node_pool="l4", state="desired") == 2
    # Cost of the nodes, per GPU-hour times GPUs: one L4 node and one H100 node run now, and
    # the change applied wants a second L4 node.
    assert sample(found, "cost_per_hour", state="observed") == pytest.approx(L4_NODE + H100_NODE)
    assert sample(found, "cost_per_hour", state="desired") == pytest.approx(2 * L4_NODE + H100_NODE)
    assert sample(found, "plan_cost_per_hour") == pytest.approx(17.3)
    assert sample(found, "plan_feasible") == 1
    assert sample(found, "demand_requests_per_second", model="gemma-4-E2B", kind="planned") == 9
    assert sample(found, "demand_requests_per_second", model="gemma-4-E2B", kind="forecast") == 8
    assert sample(found, "last_step_timestamp_seconds") == 1.7e9
    assert sample(found, "dry_run") == 0
    # These reports carried no serving counts: none is published rather than a guess.
    assert not [labels for _, labels in found if ("state", "serving") in labels]
    # An actuator that tells: the new e2b replicas wait for a GPU, one of the old serves.
    observed = FleetState(more, serving={**START, "gemma-4-e2b": 1})
    status.record(replace(report(more, more, applied=False), observed=observed))
    found = samples(base)
    assert sample(found, "replicas", pool="gemma-4-e2b", state="serving") == 1
    assert sample(found, "replicas", pool="gemma-4-e2b", state="observed") == 3


def test_each_pool_publishes_the_objectives_it_is_sized_for() -> None:
    tight = Slo(ttft_p95_s=1.0, tpot_p95_s=0.05)
    slos = {"gemma-4-E4B": tight, "gemma-4-31B": Slo()}  # the other two models: none given
    status = ControllerStatus(FLEET, stale_after_s=900, slos=slos)
    server = serve_status(status, 0, host="127.0.0.1")
    try:
        found = samples(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    published = {
        (dict(labels)["pool"], name.removeprefix(PREFIX)): value
        for (name, labels), value in found.items()
        if name.startswith(PREFIX + "slo_")
    }
    assert published == {
        ("gemma-4-e4b", "slo_ttft_p95_seconds"): 1.0,
        ("gemma-4-e4b", "slo_tpot_p95_seconds"): 0.05,
        ("gemma-4-31b", "slo_ttft_p95_seconds"): 2.0,
        ("gemma-4-31b", "slo_tpot_p95_seconds"): 0.1,
    }
    assert sample(found, "slo_ttft_p95_seconds", pool="gemma-4-e4b", model="gemma-4-E4B") == 1.0


def test_a_wanted_change_in_dry_run_is_counted_as_such(
    served: tuple[ControllerStatus, Clock, str],
) -> None:
    status, _, base = served
    status.record(report(START, {**START, "gemma-4-31b": 2}, applied=False))
    found = samples(base)
    assert sample(found, "steps_total", result="dry_run") == 1
    assert not any(name.endswith("replica_changes_total") for name, _ in found)


def test_an_infeasible_plan_shows(served: tuple[ControllerStatus, Clock, str]) -> None:
    status, _, base = served
    infeasible = Plan(START, {}, 5.0, feasible=False, shortfall={"gemma-4-31B": "no room"})
    status.record(replace(report(START, START, applied=False), plan=infeasible))
    assert sample(samples(base), "plan_feasible") == 0


def test_healthz_fails_once_steps_stop_finishing(
    served: tuple[ControllerStatus, Clock, str],
) -> None:
    status, clock, base = served
    reply = httpx.get(f"{base}/healthz")
    assert (reply.status_code, reply.text.split(":")[0]) == (200, "starting")
    clock.t += 600  # a first step simulating capacities is slow, not hung
    assert httpx.get(f"{base}/healthz").status_code == 200
    status.record_failure()  # a failed step is a finished one: the loop is alive
    clock.t += 899
    assert httpx.get(f"{base}/healthz").status_code == 200
    clock.t += 2
    reply = httpx.get(f"{base}/healthz")
    assert reply.status_code == 503
    assert reply.text == "stale: the last step finished 901 s ago (limit 900 s)"
    status.record(report(START, START, applied=False))
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_an_unknown_path_is_named(served: tuple[ControllerStatus, Clock, str]) -> None:
    _, _, base = served
    reply = httpx.get(f"{base}/metric")
    assert reply.status_code == 404
    assert "'/metric'" in reply.text and "/metrics" in reply.text


class FailingSource:
    """Demand that cannot be read (the gateway is down)."""

    def read(self) -> None:
        raise MetricsError("http://gateway/metrics: connection refused")


def test_the_controller_loop_reports_failed_steps_and_keeps_going() -> None:
    status = ControllerStatus(FLEET, stale_after_s=900)
    actuator = InMemoryActuator(FleetState(replicas=dict(START)))
    controller = Controller(
        FLEET,
        lambda demand: Plan(dict(START), {}, 1.0),
        FailingSource(),
        actuator,
        ControllerSettings(interval_s=1),
    )
    seen: list[Exception] = []

    def failed(exc: Exception) -> None:
        seen.append(exc)
        status.record_failure()

    controller.run(steps=3, on_step=status.record, on_failure=failed, sleep=lambda _: None)
    assert [type(e) for e in seen] == [MetricsError] * 3
    failed_steps = {"result": "failed"}
    assert status.registry.get_sample_value(PREFIX + "steps_total", failed_steps) == 3
    assert status.health()[0]


# --- the real CLI -----------------------------------------------------------------------------

EXE = shutil.which("gemma-fleet", path=str(Path(sys.executable).parent))


def _lan_address() -> str | None:
    """The IPv4 address this machine's default route leaves from (none without a route).
    Connecting a UDP socket only picks the route; nothing is sent."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def gateway_metrics() -> Iterator[str]:
    """A /metrics endpoint rendering the real gateway's metrics (no traffic yet)."""
    metrics = GatewayMetrics()
    with serving_text(metrics.render) as endpoint:
        yield endpoint.url


def steps(found: Samples, result: str) -> float:
    """steps_total{result} in `found`, 0 before the first such step."""
    return found.get((PREFIX + "steps_total", (("result", result),))) or 0.0


def watch(port: int, proc: subprocess.Popen[str], until: Callable[[Samples], bool]) -> Samples:
    """The status samples of the autoscaler `proc` serves on `port`, read every 0.5 s until
    `until` holds of them, the process exits or 60 s pass: the last read ({} if none)."""
    deadline = time.monotonic() + 60
    found: Samples = {}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            found = samples(f"http://127.0.0.1:{port}")
        except httpx.TransportError:
            found = {}
        if until(found):
            break
        time.sleep(0.5)
    return found


def test_autoscale_serves_its_status_while_it_runs(gateway_metrics: str, tmp_path: Path) -> None:
    assert EXE is not None, "gemma-fleet is not installed next to this interpreter"
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    settings = tmp_path / "settings.yaml"
    settings.write_text("model_slos:\n  gemma-4-E4B: {ttft_p95_s: 1.0, tpot_p95_s: 0.05}\n")
    args = ["autoscale", "--fleet", str(default_fleet_path()), "--metrics-url", gateway_metrics]
    # A long interval: the first step only scrapes (rates need two scrapes), so nothing is
    # planned and nothing simulated; the status must still say the loop is alive.
    args += ["--interval", "300", "--status-port", str(port), "--settings", str(settings)]
    proc = subprocess.Popen(
        [EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        base = f"http://127.0.0.1:{port}"
        found = watch(port, proc, lambda f: steps(f, "waiting") > 0)
        assert proc.poll() is None, proc.communicate()[1]
        assert sample(found, "steps_total", result="waiting") == 1
        assert sample(found, "replicas", pool="gemma-4-31b", state="observed") == 1
        # Objectives from the settings file: E4B's own, the default for the others.
        e4b = {"pool": "gemma-4-e4b", "model": "gemma-4-E4B"}
        e2b = {"pool": "gemma-4-e2b", "model": "gemma-4-E2B"}
        assert sample(found, "slo_ttft_p95_seconds", **e4b) == 1.0
        assert sample(found, "slo_tpot_p95_seconds", **e4b) == 0.05
        assert sample(found, "slo_ttft_p95_seconds", **e2b) == 2.0
        assert sample(found, "slo_tpot_p95_seconds", **e2b) == 0.1
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.text.startswith("ok: 1 step finished")
        # Without --status-host it listens on loopback only: the cost figures stay off the LAN.
        lan = _lan_address()
        if lan is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{lan}:{port}/healthz", timeout=5)
    finally:
        err = stop(proc)
    assert proc.returncode == 0, err
    assert f"status on port {port}" in err and "autoscaler stopped" in err


def _first_process_of_a_new_pid_namespace() -> list[str]:
    """The command prefix that runs a program as PID 1 of its own PID namespace, as a
    container runs its command; skips the test where this kernel or user may not make one."""
    prefix = ["unshare", "--pid", "--fork", "--kill-child"]
    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    return prefix


def test_sigterm_stops_it_as_the_first_process_of_its_container(
    gateway_metrics: str, tmp_path: Path
) -> None:
    """The chart runs `gemma-fleet autoscale` as its container's command, so as PID 1, which
    the kernel spares any signal it has no handler for. The kubelet stops a pod with SIGTERM:
    without a handler the autoscaler ignored it and every stop (an upgrade, a drained node)
    waited out the grace period for SIGKILL. Here it runs as PID 1 of a new PID namespace and
    gets SIGTERM from outside it, as from the container runtime."""
    assert EXE is not None
    prefix = _first_process_of_a_new_pid_namespace()
    port = free_port()
    args = ["autoscale", "--fleet", str(default_fleet_path()), "--metrics-url", gateway_metrics]
    args += ["--interval", "300", "--status-port", str(port)]
    proc = subprocess.Popen(
        [*prefix, EXE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
    )
    autoscaler = None  # until found, SIGTERM goes to unshare, which then kills its child
    try:
        # Its first step done: well past start-up, so the handler is set.
        found = watch(port, proc, lambda f: steps(f, "waiting") == 1)
        assert proc.poll() is None, proc.communicate()[1]
        assert steps(found, "waiting") == 1, "no step within 60 s"
        # unshare's one child is the autoscaler: PID 1 inside, an ordinary PID out here.
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        (autoscaler,) = (int(c) for c in children)
        status = Path(f"/proc/{autoscaler}/status").read_text().splitlines()
        (pids,) = (line.split()[1:] for line in status if line.startswith("NSpid:"))
        assert pids[-1] == "1", pids  # its PID in the innermost namespace
    finally:
        err = stop(proc, pid=autoscaler)
    assert proc.returncode == 0, err
    assert "autoscaler stopped" in err


def test_unreadable_metrics_are_failed_steps_not_waiting(tmp_path: Path) -> None:
    """Nothing answers the metrics URL: every step fails (counted, for the steps-failing
    alert) with one line naming the URL, not "waiting" forever; and no plan has said the demand
    cannot be met."""
    assert EXE is not None
    port = free_port()
    dead = "http://127.0.0.1:9/metrics"
    args = ["--metrics-url", dead, "--interval", "1", "--status-port", str(port)]
    proc = subprocess.Popen(
        [EXE, "autoscale", "--fleet", str(default_fleet_path()), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )
    try:
        found = watch(port, proc, lambda f: steps(f, "failed") >= 2)
        assert proc.poll() is None, proc.communicate()[1]
        assert sample(found, "steps_total", result="failed") >= 2
        assert sample(found, "steps_total", result="waiting") == 0
        assert math.isnan(sample(found, "plan_feasible"))
    finally:
        err = stop(proc)
    assert f"reconcile step failed: no metrics URL answered: {dead}" in err
    assert "Traceback" not in err

    once = subprocess.run(
        [EXE, "autoscale", "--fleet", str(default_fleet_path()), "--metrics-url", dead, "--once"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
    )
    assert once.returncode == 2
    (line,) = once.stderr.strip().splitlines()
    assert f"no metrics URL answered: {dead}" in line


def test_a_status_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    assert EXE is not None
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["--metrics-url", "http://127.0.0.1:9/metrics", "--status-port"]
        done = subprocess.run(
            [EXE, "autoscale", "--fleet", str(default_fleet_path()), *args, str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
        )
    assert done.returncode == 2
    assert f"--status-port {port}: cannot listen" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_once_with_a_status_port_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """`--once` returned after its step without serving the status it was asked for."""
    args = ["--metrics-url", "http://127.0.0.1:9/metrics", "--once", "--status-port", "9999"]
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", "--fleet", str(default_fleet_path()), *args])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "--status-port" in line and "--once" in line


def test_the_cost_figures_above_are_the_default_fleets() -> None:
    nodes = [(n.name, n.gpus_per_node, n.cost_per_gpu_hour) for n in FLEET.node_pools]
    assert nodes == [("l4", 2, 0.85), ("h100", 4, 3.9)]
