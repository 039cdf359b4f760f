"""deployments/fleet/processes.py on real processes: a shell with a child, as a fleet's
raylet with its workers. No Ray here; the fleet tests use the same functions on Ray's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from gemma_fleet.deployments.fleet.processes import (
    alive,
    process_tree,
    rss_bytes,
    tree_rss_bytes,
)


@pytest.fixture
def shell_with_child() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 10
    while len(process_tree([proc.pid])) < 2:
        assert time.monotonic() < deadline, "the shell did not start its child"
        time.sleep(0.05)
    yield proc
    with contextlib.suppress(ProcessLookupError):  # the test may have killed it already
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_the_tree_holds_the_root_and_its_descendants(
    shell_with_child: subprocess.Popen[bytes],
) -> None:
    tree = process_tree([shell_with_child.pid])
    assert tree[shell_with_child.pid] == "sh -c sleep 300 & wait"
    (child,) = [pid for pid in tree if pid != shell_with_child.pid]
    assert tree[child] == "sleep 300"
    assert os.getpid() not in process_tree([os.getppid()])  # never the caller itself


def test_memory_of_the_tree_adds_up_its_processes(
    shell_with_child: subprocess.Popen[bytes],
) -> None:
    tree = process_tree([shell_with_child.pid])
    each = [rss_bytes(pid) for pid in tree]
    assert all(b > 0 for b in each)
    assert tree_rss_bytes(shell_with_child.pid) == pytest.approx(sum(each), rel=0.2)
    assert tree_rss_bytes(shell_with_child.pid) > rss_bytes(shell_with_child.pid)


def test_a_killed_process_is_not_alive_even_before_it_is_reaped(
    shell_with_child: subprocess.Popen[bytes],
) -> None:
    pid = shell_with_child.pid
    assert alive(pid)
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(pid):  # a zombie until wait() below: /proc still lists it, state Z
        assert time.monotonic() < deadline, "killed shell still counted alive"
        time.sleep(0.05)
    assert process_tree([pid]) == {}
    assert rss_bytes(pid) == 0
    shell_with_child.wait()
    assert not alive(pid)
