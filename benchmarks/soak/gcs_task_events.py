"""Does Ray's GCS stop growing at its task-event cap? The soak's gcs_server grew all hour.

Starts a bare Ray head of its own (port 6811, its own temp dir), makes `--calls` calls to one
actor in batches of 1,000, and prints the GCS's resident memory every 20,000 calls. Ray keeps
the last `RAY_task_events_max_num_task_in_gcs` task events (100,000 by default); past that the
memory should stay flat. The head is stopped by its process group at the end.

    ./dev run python benchmarks/soak/gcs_task_events.py            # about 90 s on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PORT = 6811
TEMP_DIR = "/tmp/ray-gcs-task-events"


def gcs_rss_mb() -> float:
    """RSS of this head's gcs_server (found by its port), in MiB; -1 if none runs."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"gcs_server" in cmd and f"--gcs_server_port={PORT}".encode() in cmd:
            line = next(x for x in status.splitlines() if x.startswith("VmRSS"))
            return int(line.split()[1]) / 1024
    return -1.0


def measure(calls: int) -> None:
    import ray

    ray.init(address=f"127.0.0.1:{PORT}", logging_level=logging.ERROR)

    @ray.remote
    class Echo:
        def echo(self, x: int) -> int:
            return x

    echo = Echo.remote()  # type: ignore[attr-defined]  # Ray adds .remote at run time
    ray.get(echo.echo.remote(0))
    started = time.monotonic()
    print(f"{0:>7} calls: GCS {gcs_rss_mb():6.1f} MB", flush=True)
    for done in range(1000, calls + 1, 1000):
        ray.get([echo.echo.remote(i) for i in range(1000)])
        if done % 20_000 == 0:
            time.sleep(2)  # workers report task events every second
            took = time.monotonic() - started
            print(f"{done:>7} calls: GCS {gcs_rss_mb():6.1f} MB [{took:.0f} s]", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(Path(sys.executable).with_name("ray")), "start", "--head", f"--port={PORT}",
         "--num-cpus=4", "--include-dashboard=false", f"--temp-dir={TEMP_DIR}", "--block"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while gcs_rss_mb() < 0:
            if head.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Ray head did not start")
            time.sleep(1)
        time.sleep(5)  # the raylet registers after the GCS
        measure(args.calls)
    finally:
        # Only this head's processes (its own session), never `ray stop`, which stops every
        # Ray on the machine. `ray start --block` may outlive a SIGTERM with children left.
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
