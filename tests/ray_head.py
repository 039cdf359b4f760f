"""A private Ray cluster for a test suite: `ray start --head --block` in its own process group on
the suite's own ports and temp dir. Teardown signals that group only: no `ray stop`, nothing else
on the machine is touched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed next to this Python")
    return found


@contextmanager
def private_ray_head(
    *,
    gcs_port: int,
    worker_ports: tuple[int, int],
    temp_dir: str,
    num_cpus: int,
    env: Mapping[str, str],
    extra_args: Sequence[str] = (),
    start_timeout_s: float = 90,
) -> Iterator[str]:
    """Start the head (`extra_args` appended to `ray start`), connect this process as its
    driver (`env` also goes to the workers), yield the address, and take it all down
    afterwards."""
    import ray

    os.environ.update(env)
    if ray.is_initialized():
        # Something earlier in this process auto-started or joined another Ray (for example
        # `ray.get_runtime_context()` does); the suite must talk to its own cluster.
        ray.shutdown()
    log = Path(temp_dir) / "gemma-fleet-test-head.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    head = subprocess.Popen(
        [
            _ray_executable(),
            "start",
            "--head",
            "--block",
            f"--port={gcs_port}",
            f"--min-worker-port={worker_ports[0]}",
            f"--max-worker-port={worker_ports[1]}",
            f"--temp-dir={temp_dir}",
            f"--num-cpus={num_cpus}",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
            *extra_args,
        ],
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the teardown signals only that
    )
    address = f"127.0.0.1:{gcs_port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray head exited ({head.returncode}); see {log}")
            try:
                ray.init(address=address, runtime_env={"env_vars": dict(env)})
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                # `ray start --block` can take over a minute to stop on SIGTERM (it waits on
                # its children); the group is the suite's own, so kill it after a short grace.
                head.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=30)
