"""The locustfile for plain Locust (`locust -f loadtest/locustfile.py`, docs/loadtest.md) runs
the workload, and says which workloads its user count leaves without a user, which
`gemma-fleet loadtest` says before a run but plain Locust has no place for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
CI_WORKLOAD = Path(__file__).with_name("workload-ci.yaml")


def _locust(users: int, rate: float | None = None, *extra: str, **env: str) -> str:
    """Plain Locust for 3 s against a port nothing listens on (the requests fail; only the
    staffing matters here), starting all its users at once unless `rate` says; its log."""
    done = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
         "--headless", "-u", str(users), "-r", str(rate or users), "-t", "3s", "--only-summary",
         "--exit-code-on-error", "0", "--host", "http://127.0.0.1:9", *extra],
        env={**os.environ, "GEMMA_FLEET_API_KEY": "gfk_x_y", "GEMMA_FLEET_LOADTEST_WORKLOAD":
             str(CI_WORKLOAD), **env},
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return " ".join((done.stdout + done.stderr).split())


@pytest.mark.parametrize(
    ("users", "left_out"),
    [(2, "long-context, vision, audio, tool-loop, json-extract, limited-pdf"), (8, None)],
)
def test_plain_locust_names_the_workloads_its_users_leave_out(
    users: int, left_out: str | None
) -> None:
    log = _locust(users)
    assert "Spawning is complete" in log or "All users spawned" in log, log[-1500:]
    if left_out is None:
        assert "gives no user" not in log
    else:
        assert f"Gemma Fleet: at {users} users Locust gives no user to {left_out}" in log


def test_with_a_shape_the_peak_is_what_counts() -> None:
    """A step shape starts small on purpose: only its peak is checked (8 users run all)."""
    log = _locust(1, GEMMA_FLEET_LOADTEST_SHAPE="step", GEMMA_FLEET_LOADTEST_DURATION="3s",
                  GEMMA_FLEET_LOADTEST_USERS="8")  # fmt: skip
    assert "gives no user" not in log
    log = _locust(1, GEMMA_FLEET_LOADTEST_SHAPE="step", GEMMA_FLEET_LOADTEST_DURATION="3s",
                  GEMMA_FLEET_LOADTEST_USERS="4")  # fmt: skip
    assert "Gemma Fleet: at 4 users Locust gives no user to long-context" in log


def test_too_slow_a_spawn_rate_is_named_before_the_first_user_starts() -> None:
    """At -r 1 a 3 s test starts 3 of its 8 users: the log says so before any of them runs (a
    slow ramp never reaches spawning_complete), naming the workloads Locust deals last."""
    log = _locust(8, rate=1)
    warning = (
        "Gemma Fleet: at --spawn-rate 1 a 3 s test starts at most 3 of its 8 users, and Locust "
        "starts those of long-context, vision, tool-loop, json-extract, limited-pdf last"
    )
    assert warning in log, log[-1500:]
    assert log.index(warning) < log.index("Ramping to 8 users")
    # batches of 2 every 2/2.01 s: the 4th lands at 2.99 s
    assert "--spawn-rate 2.01 starts 8 users before the end" in log


def test_with_processes_only_the_master_warns() -> None:
    """Each worker of --processes fires the same events for its share of the users: the
    warning is the master's, once, with the test's user count."""
    log = _locust(4, None, "--processes", "2")
    assert log.count("Gemma Fleet:") == 1, log[-1500:]
    assert "Gemma Fleet: at 4 users Locust gives no user to" in log


def test_the_web_ui_warns_when_its_form_starts_the_test(tmp_path: Path) -> None:
    """The web UI's form (users, spawn rate, run time) reaches Locust before the first user
    starts: the same warning is logged then."""
    port = free_port()
    log_path = tmp_path / "locust.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "locustfile.py"),
             "--web-host", "127.0.0.1", "--web-port", str(port)],
            env={**os.environ, "GEMMA_FLEET_API_KEY": "gfk_x_y",
                 "GEMMA_FLEET_LOADTEST_WORKLOAD": str(CI_WORKLOAD)},
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        ui = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(ui, timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()[-1500:]
                time.sleep(0.3)
        form = {"user_count": "8", "spawn_rate": "1", "run_time": "3s",
                "host": "http://127.0.0.1:9"}  # fmt: skip
        assert httpx.post(ui + "/swarm", data=form, timeout=10).json()["success"]
        warning = "Gemma Fleet: at --spawn-rate 1 a 3 s test starts at most 3 of its 8 users"
        while warning not in " ".join(log_path.read_text().split()):
            assert time.monotonic() < deadline, log_path.read_text()[-1500:]
            time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(30)
