"""What the fault suite drives and measures: concurrent chat requests against a running fleet
(threads, one HTTP client each), every request's outcome with its timing, and the fleet's
replicas as the Serve controller sees them (to kill, stall and count). The benchmark script
(benchmarks/faults/run.py) runs the suite and renders the figures it records here."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

# A client that waits longer than this for one request counts it as hung: the suite's bound.
REQUEST_TIMEOUT_S = 30.0
RESULTS_ENV = "GEMMA_FLEET_FAULT_RESULTS"  # where the suite writes its figures (JSON), if set


@dataclass
class Outcome:
    """One request as the client saw it."""

    model: str
    stream: bool
    started: float  # time.monotonic()
    ended: float = 0.0
    status: int = 0  # HTTP status; 0: no answer (transport error or client timeout)
    pool: str = ""
    retry_after: str | None = None
    error: str = ""  # transport error, or the error event that ended a stream
    cut: bool = False  # a stream that ended with an error event
    done: bool = False  # a stream that ended with data: [DONE]

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.cut and (self.done or not self.stream)


@dataclass(frozen=True)
class Shape:
    """What each worker sends, in turn: (model, stream) pairs."""

    requests: tuple[tuple[str, bool], ...]
    max_tokens: int = 64
    # True: every prompt starts alike (a hot prefix the pool's router keeps on one replica);
    # False: each starts differently, so requests spread over the replicas by load.
    shared_prefix: bool = False


class Load:
    """`workers` threads sending requests back to back until stopped."""

    def __init__(self, base_url: str, key: str, shape: Shape, workers: int) -> None:
        self.base_url = base_url
        self.key = key
        self.shape = shape
        self.workers = workers
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(target=self._worker, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(REQUEST_TIMEOUT_S + 5)
        return list(self.outcomes)

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for o in self.outcomes if o.ended == 0.0)

    def _worker(self, index: int) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.base_url, headers=headers, timeout=REQUEST_TIMEOUT_S) as c:
            turn = index
            while not self._stop.is_set():
                model, stream = self.shape.requests[turn % len(self.shape.requests)]
                turn += 1
                outcome = Outcome(model=model, stream=stream, started=time.monotonic())
                with self._lock:
                    self.outcomes.append(outcome)
                send(c, outcome, self.shape.max_tokens, self.shape.shared_prefix)
                if outcome.status in (0, 503):
                    time.sleep(0.2)  # a refused client backs off a little, as SDKs do


def send(client: httpx.Client, outcome: Outcome, max_tokens: int, shared_prefix: bool) -> None:
    """Send one chat request and fill in `outcome` (never raises)."""
    tag = os.urandom(8).hex()
    prompt = f"Tell me a story, number {tag}" if shared_prefix else f"{tag}: tell me a story"
    body = {
        "model": outcome.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": outcome.stream,
    }
    try:
        if not outcome.stream:
            reply = client.post("/v1/chat/completions", json=body)
            _record_headers(outcome, reply)
            if reply.status_code != 200:
                outcome.error = reply.text[:300]
        else:
            with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                _record_headers(outcome, reply)
                if reply.status_code != 200:
                    outcome.error = reply.read().decode(errors="replace")[:300]
                else:
                    for line in reply.iter_lines():
                        if line == "data: [DONE]":
                            outcome.done = True
                        elif line.startswith("data: ") and '"error"' in line[:20]:
                            outcome.cut = True
                            outcome.error = line[6:300]
    except httpx.HTTPError as exc:
        outcome.status = 0
        outcome.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        outcome.ended = time.monotonic()


def _record_headers(outcome: Outcome, reply: httpx.Response) -> None:
    outcome.status = reply.status_code
    outcome.pool = reply.headers.get("x-gemma-fleet-pool", "")
    outcome.retry_after = reply.headers.get("retry-after")


# --- the fleet's replicas, as the Serve controller sees them -------------------------------


@dataclass(frozen=True)
class Replica:
    actor_name: str
    pid: int
    state: str
    node_id: str | None  # None until Ray has placed it


def replicas(app: str, pool: str) -> list[Replica]:
    """Every replica of `pool` (a deployment of application `app`) the controller knows."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client()
    assert client is not None, "Serve is not running"
    details = ServeInstanceDetails(**client.get_serve_details())
    found = details.applications.get(app)
    deployment = found.deployments.get(pool) if found is not None else None
    if deployment is None:
        return []
    return [
        Replica(
            actor_name=r.actor_name or "",
            pid=r.pid or 0,
            state=str(r.state.value),
            node_id=r.node_id,
        )
        for r in deployment.replicas
    ]


def running(app: str, pool: str) -> list[Replica]:
    return [r for r in replicas(app, pool) if r.state == "RUNNING"]


def ongoing(replica: Replica) -> int:
    """Requests the replica is serving now, as it counts them (answered off its user code)."""
    import ray

    # Any: ActorHandle types its (dynamic) methods as Never.
    actor: Any = ray.get_actor(replica.actor_name, namespace="serve")
    return int(ray.get(actor.get_num_ongoing_requests.remote(), timeout=5))


def kill_replica(replica: Replica) -> None:
    """Kill the replica's actor as a crash would (no graceful shutdown, no restart by Ray:
    the Serve controller must notice and replace it)."""
    import ray

    ray.kill(ray.get_actor(replica.actor_name, namespace="serve"), no_restart=True)


def wait_until(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.25) -> float:
    """Seconds until `condition` held; raises AssertionError after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s:.0f} s")
        time.sleep(every_s)
    return time.monotonic() - started


# --- figures --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Phase:
    requests: int
    ok: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None


def phase(outcomes: list[Outcome], start: float, end: float) -> Phase:
    """Requests that started in [start, end) and how fast the successful ones were."""
    inside = [o for o in outcomes if start <= o.started < end]
    times = [o.seconds for o in inside if o.ok]
    return Phase(
        requests=len(inside),
        ok=sum(o.ok for o in inside),
        p50_s=_round(percentile(times, 0.5)),
        p95_s=_round(percentile(times, 0.95)),
        max_s=_round(max(times, default=None)),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class FaultFigures:
    """One fault's figures, as the results file records them."""

    fault: str
    in_flight_at_fault: int
    requests: int
    failed: dict[str, int]  # by what the client saw: "503", "0 (no answer)", "cut stream"...
    retried: int  # calls the gateway tried again before a first reply (its counter)
    cut_streams: int
    recovery_s: float | None
    before: Phase
    during: Phase
    after: Phase
    notes: list[str] = field(default_factory=list)
    # A few failed requests: seconds after the fault they were sent, status, what they said.
    failed_samples: list[str] = field(default_factory=list)


def failed_samples(outcomes: list[Outcome], fault_at: float, limit: int = 6) -> list[str]:
    """The first and last few failures, with when they were sent relative to the fault."""
    bad = [o for o in outcomes if not o.ok]
    picked = bad if len(bad) <= limit else bad[: limit // 2] + bad[-(limit // 2) :]
    return [
        f"{o.started - fault_at:+.2f} s {o.model} {'stream' if o.stream else 'json'} "
        f"-> {'cut' if o.cut else o.status} after {o.seconds:.2f} s: {o.error[:140]}"
        for o in picked
    ]


def failures(outcomes: list[Outcome]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in outcomes:
        if o.ok:
            continue
        what = "cut stream" if o.cut else ("no answer" if o.status == 0 else str(o.status))
        label = f"{'stream' if o.stream else 'json'} {o.model}: {what}"
        out[label] = out.get(label, 0) + 1
    return dict(sorted(out.items()))


def gateway_counter(root: str, name: str, **labels: str) -> float:
    """A counter's value from the gateway's /metrics (summed over unmatched labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    text = httpx.get(root + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


class Results:
    """Collects every fault's figures; written as JSON where RESULTS_ENV points."""

    def __init__(self) -> None:
        self.figures: list[FaultFigures] = []
        self.meta: dict[str, Any] = {}

    def add(self, figures: FaultFigures) -> None:
        self.figures.append(figures)

    def write(self) -> Path | None:
        target = os.environ.get(RESULTS_ENV)
        if not target:
            return None
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"meta": self.meta, "faults": [asdict(f) for f in self.figures]}
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


@contextmanager
def load(base_url: str, key: str, shape: Shape, workers: int) -> Iterator[Load]:
    running_load = Load(base_url, key, shape, workers)
    running_load.start()
    try:
        yield running_load
    finally:
        running_load.stop()
