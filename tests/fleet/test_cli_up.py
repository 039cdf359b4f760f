"""`gemma-fleet up` as a user runs it: a separate process that starts a fleet, announces it,
serves requests, and on SIGTERM finishes the requests in flight (a second SIGTERM stops
without them) while refusing new ones with a 503 the SDKs retry, stops Serve and every node it
started, and exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml
from fleet.long_answer import stream_answer

from gemma_fleet.deployments.fleet.processes import alive, process_tree

pytestmark = pytest.mark.slow

FLEET = {
    "node_pools": [
        {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 1, "cost_per_gpu_hour": 0.85}
    ],
    "model_pools": [
        {
            "name": "edge",
            "model": "gemma-4-E2B",
            "node_pool": "l4",
            "simulator": {"speedup": 10},
        }
    ],
}
# The command is registered in gemma_fleet.cli.main by the lead; typer.run drives the same
# function with the same options meanwhile.
RUN_UP = "import typer; from gemma_fleet.cli.up import up_command; typer.run(up_command)"
# Tokens of the answers in flight at SIGTERM, at speedup 10: the short one streams a few
# seconds, the long one over a minute (the second SIGTERM cuts it).
SHORT_ANSWER, LONG_ANSWER = 3000, 30000
# RAY_SERVE_THROUGHPUT_OPTIMIZED is set before Ray is imported, as a shell (or an earlier fleet
# in this process, which sets it for its cluster) may have it: Serve's handles then default to
# the caller's asyncio loop, and a stopping fleet must still reach its gateway from plain code.
UP_ENV = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_AUTH_MODE": "disabled"}


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    info: dict[str, Any]  # the ready file: base_url, api_key, models, pid
    ready: Path
    log: Path


@contextmanager
def _up(tmp_path: Path, port: int, ray_port: int, worker_ports: str) -> Iterator[Up]:
    """`gemma-fleet up` of FLEET in a process of its own, once it announced itself ready. On
    the way out (a failed assertion) it is stopped as a user would, twice (without the drain),
    so that its nodes go too; killed only if that fails."""
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(FLEET))
    ready = tmp_path / "ready.json"
    args = [
        "--fleet", str(fleet_file), "--port", str(port), "--ray-port", str(ray_port),
        "--worker-ports", worker_ports, "--ray-temp-dir", f"/tmp/ray-fleet-{port}",
        "--ready-file", str(ready), "--timeout", "300", "--state-dir", str(tmp_path / "state"),
    ]  # fmt: skip
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN_UP, *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=UP_ENV,
    )
    try:
        deadline = time.monotonic() + 360
        while not ready.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "fleet not ready in time"
            time.sleep(1)
        yield Up(proc, json.loads(ready.read_text()), ready, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _assert_refuses_new_requests(base_url: str, api_key: str) -> None:
    """A stopping fleet: /ready fails at once (load balancers stop sending), /health still
    answers, and a new request gets a 503 with Retry-After in its API's error shape - one the
    official SDKs retry, unlike the 404 of a route that is gone."""
    root = base_url.removesuffix("/v1")
    deadline = time.monotonic() + 10
    while (ready := httpx.get(root + "/ready", timeout=10)).status_code == 200:
        assert time.monotonic() < deadline, "still ready 10 s after SIGTERM"
        time.sleep(0.1)
    assert ready.status_code == 503 and "stopping" in ready.json()["error"]["message"], ready.text
    assert httpx.get(root + "/health", timeout=10).json() == {"status": "ok"}

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="edge", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
    assert refused.value.status_code == 503, refused.value
    assert int(refused.value.response.headers["retry-after"]) > 0
    assert "stopping" in refused.value.message
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "service_unavailable"

    claude = anthropic.Anthropic(base_url=root, api_key=api_key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as refused_too:
        claude.messages.create(
            model="edge", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    assert refused_too.value.status_code == 503, refused_too.value
    assert int(refused_too.value.response.headers["retry-after"]) > 0
    body = refused_too.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error", body
    assert "stopping" in body["error"]["message"]


def test_up_serves_until_sigterm_then_stops_everything(tmp_path: Path) -> None:
    with _up(tmp_path, 8731, 6731, "22500-22999") as up:
        proc, info = up.proc, up.info
        assert info["models"] == ["edge"] and info["pid"] == proc.pid
        assert up.ready.stat().st_mode & 0o077 == 0  # it holds the keys: owner-only
        client = openai.OpenAI(base_url=info["base_url"], api_key=info["api_key"], max_retries=0)
        reply = client.chat.completions.create(
            model="edge", messages=[{"role": "user", "content": "hi"}], max_tokens=8
        )
        assert reply.choices[0].message.content

        running = process_tree([proc.pid])
        assert any(cmd.startswith("ray::ServeReplica") for cmd in running.values())
        started = [threading.Event(), threading.Event()]
        short = stream_answer(client, SHORT_ANSWER, started[0])
        long = stream_answer(client, LONG_ANSWER, started[1])
        assert all(s.wait(timeout=60) for s in started)
        signalled_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _assert_refuses_new_requests(info["base_url"], info["api_key"])
        assert "ended_at" not in long  # the refusals came while answers were in flight
        short["thread"].join(timeout=120)
        # The short answer was in flight when the signal came, and it was finished, not cut.
        assert "error" not in short, short
        assert short["ended_at"] > signalled_at
        assert short["tokens"] == SHORT_ANSWER and short["finish_reason"] is not None
        # The fleet still waits for the long one, and still refuses (503, not 404) meanwhile.
        _assert_refuses_new_requests(info["base_url"], info["api_key"])
        # A second signal stops without waiting for the long one.
        assert "ended_at" not in long and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
        long["thread"].join(timeout=60)
        assert "error" in long and "tokens" not in long, long
    output = up.log.read_text()
    assert "http://127.0.0.1:8731/v1" in output and "fleet stopped" in output
    # Serve's controller goes with the nodes, not killed under its own calls (which Ray
    # reports on the console as failed tasks)
    assert "Task ServeController" not in output
    # nor Ray's and Serve's driver chatter (each deployment's options, a handle's internals),
    # nor vLLM's Triton lines on a CPU host: the fleet's own lines say what a user acts on
    for chatter in ("Deployment Options", "SharedRouterLongPollClient", "Triton", "Connecting"):
        assert chatter not in output, chatter
    assert not up.ready.exists()
    assert [pid for pid in running if alive(pid)] == []


def test_drain_refuses_new_requests_and_waits_for_the_answers_in_flight(
    tmp_path: Path,
) -> None:
    """`gemma-fleet drain`, as the Helm chart's head-pod preStop hook runs it, against a running
    fleet: new requests get the stopping 503 at once, the answer in flight is finished, and
    the command exits 0 only after it; the fleet then stops without waiting."""
    with _up(tmp_path, 8732, 6732, "23000-23499") as up:
        info = up.info
        client = openai.OpenAI(base_url=info["base_url"], api_key=info["api_key"], max_retries=0)
        started = threading.Event()
        answer = stream_answer(client, SHORT_ANSWER, started)
        assert started.wait(timeout=60)
        drain = subprocess.Popen(
            [sys.executable, "-m", "gemma_fleet.cli", "drain", "--address", "127.0.0.1:6732",
             "--timeout", "120"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=UP_ENV,
        )  # fmt: skip
        _assert_refuses_new_requests(info["base_url"], info["api_key"])
        assert drain.poll() is None and "ended_at" not in answer  # still waiting for it
        answer["thread"].join(timeout=120)
        assert "error" not in answer, answer
        assert answer["tokens"] == SHORT_ANSWER and answer["finish_reason"] is not None
        out, err = drain.communicate(timeout=120)
        drained_at = time.monotonic()
        assert drain.returncode == 0, err[-3000:]
        assert "drained" in out
        assert drained_at >= answer["ended_at"]
        # Drained: the fleet keeps refusing, and stops without a drain of its own to wait for.
        _assert_refuses_new_requests(info["base_url"], info["api_key"])
        signalled_at = time.monotonic()
        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=120) == 0
        assert time.monotonic() - signalled_at < 60
