"""Ends the test process with pytest's exit status before native exit-time destructors run.

Why: the pytest process connects to several Ray clusters in turn (`ray_head.py`:
`ray.init(address=...)`, then `ray.shutdown()`). Ray's core worker and gRPC leave native
threads behind each session (ray-project/ray#31145: restarting Ray in one process with
background threads can crash), and at interpreter exit, once C++ static destructors have
freed gRPC's channel data, one of those threads can still touch it: a segfault after the
summary line. CI saw it on 2026-12-03 and twice on 2026-12-06, each time after every test
passed; exit code 139 then fails the run whatever the results were.

What is skipped: only what runs after pytest has finished reporting (its `unconfigure`
hooks have run, its files are written). Every fixture has already stopped what it started
(by PID, at its own teardown); a Ray still initialised is shut down here first; logs and the
standard streams are flushed. `atexit` handlers do not run, so nothing a test relies on may
live in one.
"""

from __future__ import annotations

import logging
import os
import sys

import pytest

_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:  # no session ran (`--help`, a usage error): exit as pytest would
        return
    ray = sys.modules.get("ray")  # only the tests that use Ray import it
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
