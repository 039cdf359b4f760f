"""The simulated engine core: requests in, token events out, on the asyncio loop.

One background task runs engine steps back to back while there is work: the scheduler packs a
step, the roofline prices it, the task sleeps step_time / speedup (never blocking the loop),
then the step's sampled tokens go out to each request's queue. Time inside the simulator is
simulated time: it advances by each step's time while busy and follows the wall clock (times
speedup) while idle. Every latency (TTFT, inter-token, e2e) is measured in simulated seconds, so
results do not depend on the speedup or on the host's speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.kv_pool import KvPool
from gemma_fleet.deployments.engines.simulator.metrics import SimulatorMetrics
from gemma_fleet.deployments.engines.simulator.roofline import STEP_OVERHEAD_S, Roofline
from gemma_fleet.deployments.engines.simulator.scheduler import Scheduler, SimRequest, StepPlan
from gemma_fleet.vram import ProfileError, RuntimeAssumptions, VramProfile, profile


@dataclass(frozen=True)
class TokenEvent:
    """One output token of one request, at simulated time `time`."""

    request_id: str
    index: int  # position in the output
    token_id: int
    time: float
    finished: bool
    num_cached_tokens: int
    arrival_time: float  # simulated time the request arrived

    @property
    def latency(self) -> float:
        """Simulated seconds from arrival to this token (TTFT for the first one)."""
        return self.time - self.arrival_time


def roofline_for(config: SimulatorConfig) -> Roofline:
    """The step-time model of a simulated replica."""
    overhead = STEP_OVERHEAD_S if config.step_overhead_s is None else config.step_overhead_s
    return Roofline.for_names(
        config.model,
        config.gpu,
        config.quant,
        tp=config.tp,
        kv_dtype=config.kv_dtype,
        step_overhead_s=overhead,
    )


def profile_for(config: SimulatorConfig) -> VramProfile:
    """The VRAM profile a simulated replica sizes its KV cache from."""
    runtime = RuntimeAssumptions(
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
    )
    return profile(
        config.model,
        config.gpu,
        config.quant,
        tp=config.tp,
        max_model_len=config.max_model_len,
        kv_dtype=config.kv_dtype,
        text_only=config.text_only,
        runtime=runtime,
    )


class SimulatorCore:
    """A simulated vLLM engine for one SimulatorConfig."""

    def __init__(self, config: SimulatorConfig, model_name: str = "simulator") -> None:
        self.config = config
        self.model_name = model_name
        self.profile = profile_for(config)
        if not self.profile.fits:
            raise ProfileError(
                f"{config.model} {config.quant} tp={config.tp} on {config.gpu}: "
                f"{self.profile.reason}"
            )
        self.pool = KvPool.from_profile(
            self.profile, enable_prefix_caching=config.enable_prefix_caching
        )
        self.roofline = roofline_for(config)
        self.scheduler = Scheduler(
            self.pool,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=config.max_model_len,
        )
        self.metrics = SimulatorMetrics(model_name, config.max_model_len)
        self.now = 0.0  # simulated seconds since start
        self.steps = 0
        self.busy_time = 0.0
        self.paused = False
        self._wall_mark = time.monotonic()
        self._requests: dict[str, SimRequest] = {}
        self._queues: dict[str, asyncio.Queue[TokenEvent]] = {}
        self._reasons: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="simulator-engine")

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def check_health(self) -> None:
        """Raise if the engine loop died (Serve then restarts the replica)."""
        if self._task is not None and self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"simulator engine loop stopped: {exc!r}")

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wakeup.set()

    # ---- requests --------------------------------------------------------------------------
    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        output_plan: list[int],
        finish_reason: str = "stop",
        queue: asyncio.Queue[TokenEvent] | None = None,
    ) -> SimRequest:
        """Queue a request that will produce exactly `output_plan` (token ids); its token
        events go to `queue` (default: a queue of its own)."""
        if request_id in self._requests:
            raise ValueError(f"duplicate request id {request_id!r}")
        if not output_plan:
            raise ValueError("a request must produce at least one token")
        total = len(prompt_token_ids) + len(output_plan)
        if total > self.config.max_model_len:
            raise ValueError(
                f"prompt ({len(prompt_token_ids)}) + output ({len(output_plan)}) tokens exceed "
                f"max_model_len {self.config.max_model_len}"
            )
        if self.config.clock == "wall" and not self.scheduler.has_work():
            # Idle: simulated time has followed the wall clock since the last step.
            wall = time.monotonic()
            self.now += (wall - self._wall_mark) * self.config.speedup
            self._wall_mark = wall
        request = SimRequest(request_id, list(prompt_token_ids), list(output_plan), self.now)
        self.scheduler.add(request)
        self._requests[request_id] = request
        self._reasons[request_id] = "length" if finish_reason == "length" else "stop"
        self._queues[request_id] = asyncio.Queue() if queue is None else queue
        self._update_gauges()
        self._wakeup.set()
        return request

    def abort(self, request_id: str) -> None:
        """Cancel a request: it leaves the batch and its KV blocks are freed at once."""
        request = self._requests.pop(request_id, None)
        self._queues.pop(request_id, None)
        self._reasons.pop(request_id, None)
        if request is None or request.is_finished:
            return
        self.scheduler.abort(request)
        self.metrics.success["abort"].inc()
        self._update_gauges()
        self._wakeup.set()

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        output_plan: list[int],
        finish_reason: str = "stop",
    ) -> AsyncGenerator[TokenEvent, None]:
        """Run a request and yield its tokens as they are produced. Closing the iterator early
        (client went away, task cancelled) aborts the request."""
        group = self.generate_group([(request_id, prompt_token_ids, output_plan, finish_reason)])
        async with contextlib.aclosing(group) as events:
            async for event in events:
                yield event

    async def generate_group(
        self, children: list[tuple[str, list[int], list[int], str]]
    ) -> AsyncGenerator[TokenEvent, None]:
        """Run the sequences of one API request (OpenAI's n, and a completions batch's
        prompts: vLLM fans a request out into requests scheduled each on its own) and yield
        their tokens, interleaved as the steps produce them, until every one has finished.
        `children` holds each one's (request id, prompt token ids, output plan, finish
        reason). Closing the iterator early aborts those still running."""
        queue: asyncio.Queue[TokenEvent] = asyncio.Queue()
        requests: list[SimRequest] = []
        try:
            for request_id, prompt_token_ids, output_plan, finish_reason in children:
                requests.append(
                    self.add_request(
                        request_id, prompt_token_ids, output_plan, finish_reason, queue
                    )
                )
            running = len(requests)
            while running:
                event = await queue.get()
                yield event
                running -= event.finished
        finally:
            for request in requests:
                if not request.is_finished:
                    self.abort(request.request_id)
                self._requests.pop(request.request_id, None)
                self._queues.pop(request.request_id, None)
                self._reasons.pop(request.request_id, None)

    def request(self, request_id: str) -> SimRequest | None:
        return self._requests.get(request_id)

    # ---- the loop --------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            if self.paused or not self.scheduler.has_work():
                self._wakeup.clear()
                await self._wakeup.wait()
                self._wall_mark = time.monotonic()
                continue
            plan = self.scheduler.schedule(self.now)
            self._update_gauges()  # the batch in flight, as vLLM's scheduler stats report it
            if not plan.scheduled:
                if plan.preempted:
                    self._count_preemptions(plan)
                    continue
                # Nothing fits (cannot happen with validated requests): wait for a change.
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            cost = self.roofline.step(plan.chunks(), plan.num_sampled())
            wall_clock = self.config.clock == "wall"
            await asyncio.sleep(cost.seconds / self.config.speedup if wall_clock else 0)
            self.now += cost.seconds
            self.busy_time += cost.seconds
            self.steps += 1
            self._wall_mark = time.monotonic()
            self._finish_step(plan)

    def _count_preemptions(self, plan: StepPlan) -> None:
        self.metrics.preemptions.inc(len(plan.preempted))

    def _finish_step(self, plan: StepPlan) -> None:
        m = self.metrics
        self._count_preemptions(plan)
        m.prefix_queries.inc(plan.prefix_queries)
        m.prefix_hits.inc(plan.prefix_hits)
        m.iteration_tokens.observe(plan.num_tokens)
        previous = {id(r): r.last_token_time for r, _ in plan.scheduled}
        result = self.scheduler.update(plan, self.now)
        for request, token in result.sampled:
            index = len(request.output_token_ids) - 1
            m.generation_tokens.inc()
            prev = previous.get(id(request))
            if index == 0:
                m.prompt_tokens.inc(request.num_prompt_tokens)
                m.ttft.observe(self.now - request.arrival_time)
            elif prev is not None:
                m.itl.observe(self.now - prev)
            queue = self._queues.get(request.request_id)
            if queue is not None:
                queue.put_nowait(
                    TokenEvent(
                        request.request_id,
                        index,
                        token,
                        self.now,
                        request.is_finished,
                        request.num_cached_tokens or 0,
                        request.arrival_time,
                    )
                )
        for request in result.finished:
            self._observe_finished(request)
        self._update_gauges()

    def _observe_finished(self, request: SimRequest) -> None:
        m = self.metrics
        n = len(request.output_token_ids)
        finish = request.finish_time or self.now
        first = request.first_token_time or finish
        scheduled = request.first_scheduled_time or request.arrival_time
        m.success[self._reasons.get(request.request_id, "stop")].inc()
        m.e2e.observe(finish - request.arrival_time)
        m.queue_time.observe(scheduled - request.arrival_time)
        m.prefill_time.observe(first - scheduled)
        m.decode_time.observe(finish - first)
        if n > 1:
            m.tpot.observe((finish - first) / (n - 1))
        m.request_prompt_tokens.observe(request.num_prompt_tokens)
        m.request_generation_tokens.observe(n)

    def _update_gauges(self) -> None:
        self.metrics.running.set(len(self.scheduler.running))
        self.metrics.waiting.set(len(self.scheduler.waiting))
        self.metrics.kv_usage.set(self.pool.usage)

    # ---- introspection ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """A snapshot for routing and dashboards (also in the Prometheus metrics)."""
        return {
            "num_requests_running": len(self.scheduler.running),
            "num_requests_waiting": len(self.scheduler.waiting),
            "kv_cache_usage_perc": self.pool.usage,
            "kv_capacity_tokens": self.pool.capacity_tokens,
            "num_preemptions": self.scheduler.num_preemptions,
            "simulated_time_s": self.now,
            "steps": self.steps,
        }
