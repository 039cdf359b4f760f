"""A real Prometheus server (Debian's 2.42, unpacked into the venv by ./dev) on a free loopback
port, scraping the targets a test names every second and evaluating rule files every second,
with its HTTP query API for the test to read what a dashboard or an alert would see."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml
from redis_server import free_port


class PrometheusServer:
    def __init__(
        self, workdir: Path, targets: dict[str, str], rule_files: Sequence[Path] = ()
    ) -> None:
        """`targets`: scrape job name -> host:port (path /metrics)."""
        exe = shutil.which("prometheus", path=str(Path(sys.executable).parent))
        if exe is None:
            raise RuntimeError("prometheus is missing from the venv: run ./dev setup")
        self._exe = exe
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}]}
                for job, target in targets.items()
            ],
        }
        self._config = workdir / "prometheus.yml"
        self._config.write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        log = (self.workdir / "prometheus.log").open("wb")
        self._proc = subprocess.Popen(
            [
                self._exe,
                f"--config.file={self._config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus not ready on port {self.port}: {self.log_tail()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to now; raises on a query error."""
        reply = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise ValueError(f"{expr}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, series: str) -> list[str]:
        reply = httpx.get(
            f"{self.url}/api/v1/label/{label}/values", params={"match[]": series}, timeout=10
        )
        values: list[str] = reply.json()["data"]
        return values

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded alerting rule with its health, state and last error."""
        reply = httpx.get(f"{self.url}/api/v1/rules", params={"type": "alert"}, timeout=10)
        return [rule for group in reply.json()["data"]["groups"] for rule in group["rules"]]

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    """Poll `condition` (a query of what Prometheus has scraped or evaluated) until it holds;
    fails the test, naming `what`, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
        time.sleep(0.5)
