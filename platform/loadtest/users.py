"""Locust user classes, one per workload in the workload file, and the load shape.

Imported only inside Locust's process (importing locust patches the process with gevent). A
locustfile needs just:

    from gemma_fleet.loadtest.users import locust_classes
    globals().update(locust_classes())

Every request becomes a Locust request event (its type is the API it called, `chat`, `messages`
or `responses`; named after its workload; expected 429s are failures of type RateLimited),
streamed ones two more (`TTFT` and `TPOT`, in ms), and a record in the records file the report
is computed from.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import gevent
import jsonschema
import requests
from gevent import GreenletExit
from locust import LoadTestShape, User, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import WorkerRunner
from locust.user.task import LOCUST_STATE_STOPPING

from gemma_fleet.loadtest import payloads
from gemma_fleet.loadtest.apis import body_for
from gemma_fleet.loadtest.exchange import Exchange, call
from gemma_fleet.loadtest.records import EXPECTED_429, STOPPED, RecordWriter, RequestRecord
from gemma_fleet.loadtest.settings import LocustSettings, settings_from_env
from gemma_fleet.loadtest.shapes import MAX_DURATION_S, MAX_USERS, ShapeSpec
from gemma_fleet.loadtest.staffing import staffing, unstaffed_warning
from gemma_fleet.loadtest.workload import (
    Audio,
    Documents,
    JsonExtraction,
    LongContext,
    MultiTurnChat,
    ShortChat,
    ToolCalling,
    Vision,
    Workload,
    WorkloadFile,
    user_class_name,
)

DEFAULT_WORKLOAD = Path("loadtest/workloads/mix.yaml")


class RequestFailed(Exception):
    """A request that did not succeed; its class name is the Locust failure type."""


class RateLimited(RequestFailed):
    """An expected 429 (rate limit, concurrency limit or token budget)."""


log = logging.getLogger(__name__)


class _Run:
    """This process's settings and records file, shared by every virtual user."""

    settings: LocustSettings
    workload: WorkloadFile
    writer: RecordWriter | None = None
    warned_at = 0  # the user count staffing was last checked for
    is_worker = False  # a worker of --processes: its master speaks for the test
    lock = threading.Lock()
    counter = itertools.count()


def _base_url(host: str | None) -> str:
    if not host:
        raise RuntimeError("no --host given: the gateway's URL, e.g. http://127.0.0.1:8000")
    host = host.rstrip("/")
    return host if host.endswith("/v1") else host + "/v1"


class FleetUser(User):
    """A virtual user running one workload as one team. Subclassed per workload entry."""

    abstract = True
    workload: ClassVar[Workload]
    # Think time is slept inside the task instead (see `think`): a user Locust stops while in
    # its own wait can be killed just as its next request starts, a request the gateway
    # counts and the report would miss.
    wait_time = constant(0)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        index = next(_Run.counter)
        # Seeded per user, in spawn order: the same file and seed send the same requests.
        self.rng = random.Random(f"{_Run.workload.seed}:{self.workload.name}:{index}")
        self.session = requests.Session()
        self.base_url = _base_url(self.host)
        self.api_key = _Run.settings.key_of(self.workload.team, _Run.workload, os.environ)
        self.conversation: list[dict[str, Any]] = []
        self.turns_left = 0
        self.turn = 0

    def on_stop(self) -> None:
        self.session.close()

    def think(self) -> None:
        """Pause as a person (or a client's scheduler) would; a user asked to stop meanwhile
        stops here, between requests."""
        gevent.sleep(self.rng.uniform(*self.workload.think_time_s))
        if self._state == LOCUST_STATE_STOPPING:
            raise StopUser()

    @task
    def one_task(self) -> None:
        self.think()
        w = self.workload
        if isinstance(w, MultiTurnChat):
            self._turn(w)
        elif isinstance(w, ToolCalling):
            self._tool_loop(w)
        else:
            body = _single(w, self.rng)
            self.send(body)

    def _turn(self, w: MultiTurnChat) -> None:
        """One turn per task run, so a ramp-down can stop the user between turns."""
        if self.turns_left <= 0:
            self.conversation = payloads.multi_turn_opening(w)
            self.turns_left = self.rng.randint(*w.turns)
            self.turn = 0
        result = self.send(payloads.multi_turn(w, self.rng, self.conversation), step=self.turn)
        self.turns_left -= 1
        self.turn += 1
        if result.error is None:
            self.conversation.append({"role": "assistant", "content": result.content})
        else:
            self.turns_left = 0  # a failed turn ends the conversation

    def _tool_loop(self, w: ToolCalling) -> None:
        """call -> tool result -> answer, back to back as an agent runs them."""
        messages = payloads.tool_task(self.rng)
        for step in range(w.max_steps):
            result = self.send(payloads.tool_step(w, messages), step=step)
            if result.error is not None or not result.tool_calls:
                return
            call = result.tool_calls[0]
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            messages.append(payloads.tool_result(call, self.rng))

    def send(self, body: dict[str, Any], step: int = 0) -> Exchange:
        """Send one request, check what came back, and report it everywhere."""
        w = self.workload
        result = Exchange()
        try:
            result = call(
                self.session,
                self.base_url,
                self.api_key,
                body_for(w.api, body),
                _Run.settings.timeout_s,
                w.api,
            )
            if result.error is None:
                _check_answer(w, result)
        except GreenletExit:
            # Killed: the test ended past its stop timeout. Recorded as such, so the report
            # says a request was cut short rather than silently missing one.
            result.fail(STOPPED, "stopped while the request was in flight")
            self._report(body, step, result)
            raise
        except Exception as exc:  # a bug in the load generator must not end the test
            result.fail("client_error", repr(exc))
        self._report(body, step, result)
        return result

    def _report(self, body: dict[str, Any], step: int, result: Exchange) -> None:
        w = self.workload
        fire = self.environment.events.request.fire
        exception: Exception | None = None
        if result.error is not None:
            kind = RateLimited if result.error in EXPECTED_429 else RequestFailed
            # The type alone: messages carry per-request details (retry-after seconds) that
            # would split one error into many rows of Locust's failure table.
            exception = kind(result.error)
        fire(
            request_type=w.api,
            name=w.name,
            response_time=result.e2e_s * 1000,
            response_length=result.completion_tokens,
            exception=exception,
            context={"team": w.team, "pool": result.pool},
        )
        if result.error is None and result.ttft_s is not None:
            fire(request_type="TTFT", name=w.name, response_time=result.ttft_s * 1000,
                 response_length=0, exception=None, context={})  # fmt: skip
        if result.error is None and result.tpot_s is not None:
            fire(request_type="TPOT", name=w.name, response_time=result.tpot_s * 1000,
                 response_length=0, exception=None, context={})  # fmt: skip
        if _Run.writer is None:
            return
        record = RequestRecord(
            started_at=_now() - result.e2e_s,
            workload=w.name,
            kind=w.kind,
            api=w.api,
            team=w.team,
            model=str(body.get("model", "")),
            step=step,
            stream=bool(body.get("stream")),
            status=result.status,
            pool=result.pool,
            route=result.route,
            request_id=result.request_id,
            error=result.error,
            message=result.message,
            ttft_s=result.ttft_s,
            tpot_s=result.tpot_s,
            e2e_s=result.e2e_s,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            retry_after_s=result.retry_after_s,
        )
        with _Run.lock:
            _Run.writer.write(record)


def _now() -> float:
    return time.time()


def _single(w: Workload, rng: random.Random) -> dict[str, Any]:
    if isinstance(w, ShortChat):
        return payloads.short_chat(w, rng)
    if isinstance(w, LongContext):
        return payloads.long_context(w, rng)
    if isinstance(w, Vision):
        return payloads.vision(w, rng)
    if isinstance(w, Audio):
        return payloads.audio(w, rng)
    if isinstance(w, Documents):
        return payloads.documents(w, rng)
    if isinstance(w, JsonExtraction):
        return payloads.json_extraction(w, rng)
    raise TypeError(f"workload kind {w.kind} is not a single request")


def _check_answer(w: Workload, result: Exchange) -> None:
    """An answer the caller could not use is an error too: JSON that breaks its schema, a tool
    call whose arguments are not JSON."""
    if isinstance(w, JsonExtraction):
        try:
            jsonschema.validate(json.loads(result.content), payloads.EXTRACTION_SCHEMA)
        except (ValueError, jsonschema.ValidationError) as exc:
            result.fail("invalid_json", str(exc))
    for tool_call in result.tool_calls:
        try:
            json.loads(tool_call["function"]["arguments"] or "{}")
        except (ValueError, KeyError, TypeError) as exc:
            result.fail("invalid_tool_call", str(exc))


class FleetShape(LoadTestShape):
    """The shape named in the settings (constant, step, spike, diurnal)."""

    def tick(self) -> tuple[int, float] | None:
        assert _Run.settings.shape is not None
        return _Run.settings.shape.tick(self.get_run_time())  # type: ignore[no-untyped-call]


def locust_classes(env: dict[str, str] | None = None) -> dict[str, type]:
    """The user classes of the configured workload file (one per workload with a weight), and
    the shape class when a shape is configured: what a locustfile exposes to Locust."""
    settings = settings_from_env(os.environ if env is None else env, DEFAULT_WORKLOAD)
    _Run.settings = settings
    _Run.workload = settings.load_workload()
    classes: dict[str, type] = {}
    for w in _Run.workload.active:
        name = user_class_name(w.name)
        classes[name] = type(name, (FleetUser,), {"workload": w, "weight": w.weight})
    if settings.shape is not None:
        classes["FleetShape"] = FleetShape
    return classes


def _open_records(**_: Any) -> None:
    settings: LocustSettings | None = getattr(_Run, "settings", None)
    if _Run.writer is None and settings is not None and settings.records is not None:
        _Run.writer = RecordWriter(settings.records)


def _close_records(**_: Any) -> None:
    if _Run.writer is not None:
        _Run.writer.close()
        _Run.writer = None


def _warn_of_unstaffed(user_count: int, **_: Any) -> None:
    """Plain Locust (-u, its web UI) has no pre-run check like `gemma-fleet loadtest`'s: say
    which workloads get no user once the users are out, for the shape's peak when a shape
    runs (its early steps are meant to be small), once per count."""
    settings: LocustSettings | None = getattr(_Run, "settings", None)
    if settings is None or _Run.is_worker:
        return
    peak = settings.shape.users if settings.shape is not None else user_count
    if peak <= _Run.warned_at:
        return
    _Run.warned_at = peak
    if (warning := staffing(_Run.workload, peak).warning()) is not None:
        log.warning("Gemma Fleet: %s.", warning)


def _warn_of_a_slow_start(environment: Environment, **_: Any) -> None:
    """Plain Locust knows its users, spawn rate and run time before the first user starts
    (from the command line, or the web UI's form, which Locust writes into parsed_options):
    say then, as `gemma-fleet loadtest` does, which workloads too few users, or too slow a
    spawn rate for the run time, leaves without one."""
    settings: LocustSettings | None = getattr(_Run, "settings", None)
    options = environment.parsed_options
    if settings is None or options is None or _Run.is_worker:
        return
    if settings.shape is not None:
        warning = unstaffed_warning(_Run.workload, settings.shape)
    elif not options.num_users or not options.spawn_rate:  # the web UI takes 0 users
        return
    elif not options.run_time:  # no end: every user starts in time
        warning = staffing(_Run.workload, options.num_users).warning()
    else:
        spec = ShapeSpec(
            duration_s=min(options.run_time, MAX_DURATION_S),
            users=min(options.num_users, MAX_USERS),
            spawn_rate=options.spawn_rate,
        )
        warning = unstaffed_warning(_Run.workload, spec)
    if warning is not None:
        _Run.warned_at = options.num_users if settings.shape is None else settings.shape.users
        log.warning("Gemma Fleet: %s.", warning)


def _note_the_role(environment: Environment, **_: Any) -> None:
    # Each worker of --processes fires test_start and spawning_complete too, for its share of
    # the users: the warnings would repeat, with the share's count.
    _Run.is_worker = isinstance(environment.runner, WorkerRunner)


events.init.add_listener(_note_the_role)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_open_records)  # type: ignore[no-untyped-call]
events.test_start.add_listener(_warn_of_a_slow_start)  # type: ignore[no-untyped-call]
events.quitting.add_listener(_close_records)  # type: ignore[no-untyped-call]
events.spawning_complete.add_listener(_warn_of_unstaffed)  # type: ignore[no-untyped-call]
