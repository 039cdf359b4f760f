"""Stopping a `gemma-fleet autoscale` child process the way the kubelet stops its pod."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest


def stop(proc: subprocess.Popen[str], pid: int | None = None, timeout_s: float = 30.0) -> str:
    """SIGTERM to `pid` (default: the child itself), then the child's stderr once it has
    exited. One still running after `timeout_s` is killed, and the test fails saying so."""
    os.kill(proc.pid if pid is None else pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running {timeout_s:g} s after SIGTERM; its stderr:\n{err}")
    return err
