"""Continuous batching like vLLM V1's scheduler (FCFS policy), on the simulated KV pool.

Each step:
1. running requests, oldest first, get their next tokens (1 for a decode, the rest of the
   prompt up to the token budget for a chunked prefill); when the pool cannot grow a request,
   the most recently admitted running request is preempted (recompute: its blocks are freed,
   it goes back to the front of the waiting queue with nothing computed) until it can;
2. if nothing was preempted, waiting requests are admitted in FIFO order while the token budget
   (max_num_batched_tokens), max_num_seqs and the KV pool allow: a request is admitted only if
   its whole prompt fits (vLLM's scheduler_reserve_full_isl), after a prefix-cache lookup.
After the step, requests whose known tokens are all computed sample one token.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from gemma_fleet.deployments.engines.simulator.kv_pool import (
    NO_HIT,
    KvPool,
    SequenceKv,
    block_hashes,
)
from gemma_fleet.deployments.engines.simulator.roofline import ScheduledChunk
from gemma_fleet.vram import BLOCK_SIZE


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(eq=False)
class SimRequest:
    """A request inside the scheduler. `output_plan` is the token ids it will produce."""

    request_id: str
    prompt_token_ids: list[int]
    output_plan: list[int]
    arrival_time: float = 0.0
    output_token_ids: list[int] = field(default_factory=list)
    num_computed_tokens: int = 0
    status: Status = Status.WAITING
    kv: SequenceKv = field(default_factory=SequenceKv)
    hashes: list[bytes] = field(default_factory=list)
    num_preemptions: int = 0
    num_cached_tokens: int | None = None  # prefix-cache hit at first admission
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finish_time: float | None = None

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)


@dataclass
class StepPlan:
    """What one step computes."""

    scheduled: list[tuple[SimRequest, int]]
    preempted: list[SimRequest]
    admitted: list[SimRequest]
    prefix_queries: int = 0
    prefix_hits: int = 0

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)

    def chunks(self) -> list[ScheduledChunk]:
        return [ScheduledChunk(n, r.num_computed_tokens) for r, n in self.scheduled]

    def num_sampled(self) -> int:
        return sum(1 for r, n in self.scheduled if r.num_computed_tokens + n >= r.num_tokens)


@dataclass
class StepResult:
    """Tokens produced by one step: (request, token id) pairs, and requests that finished."""

    sampled: list[tuple[SimRequest, int]]
    finished: list[SimRequest]


class Scheduler:
    def __init__(
        self,
        pool: KvPool,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
    ) -> None:
        self.pool = pool
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[SimRequest] = deque()
        self.running: list[SimRequest] = []
        self.num_preemptions = 0

    def add(self, request: SimRequest) -> None:
        request.hashes = block_hashes(request.prompt_token_ids)
        self.waiting.append(request)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request: SimRequest) -> None:
        """Remove a request wherever it is and free its KV blocks."""
        if request.is_finished:
            return
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        self.pool.free(request.kv)
        request.status = Status.ABORTED

    def _preempt(self, victim: SimRequest) -> None:
        self.pool.free(victim.kv)
        victim.status = Status.PREEMPTED
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(victim)

    def schedule(self, now: float = 0.0) -> StepPlan:
        plan = StepPlan([], [], [])
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = min(
                request.num_tokens - request.num_computed_tokens,
                budget,
                self.max_model_len - request.num_computed_tokens,
            )
            if n <= 0:
                i += 1
                continue
            scheduled = True
            while not self.pool.allocate(request.kv, request.num_computed_tokens + n):
                victim = self.running.pop()
                self._preempt(victim)
                plan.preempted.append(victim)
                if victim is request:
                    scheduled = False
                    break
            if not scheduled:
                break
            plan.scheduled.append((request, n))
            budget -= n
            i += 1
        if plan.preempted:
            return plan
        while budget > 0 and self.waiting and len(self.running) < self.max_num_seqs:
            request = self.waiting[0]
            request.hashes = block_hashes(request.all_token_ids, request.hashes)
            hit = self.pool.lookup(request.hashes, request.num_tokens) if request.hashes else NO_HIT
            if not self.pool.can_admit(hit, min(request.num_tokens, self.max_model_len)):
                break
            self.waiting.popleft()
            self.pool.acquire(request.kv, hit)
            request.num_computed_tokens = hit.num_tokens
            n = min(request.num_tokens - hit.num_tokens, budget)
            allocated = self.pool.allocate(request.kv, request.num_computed_tokens + n)
            assert allocated, "admission checked that the whole prompt fits"
            if request.num_cached_tokens is None:  # first admission, as vLLM's counters
                request.num_cached_tokens = hit.num_tokens
                plan.prefix_queries += request.num_tokens
                plan.prefix_hits += hit.num_tokens
            if request.first_scheduled_time is None:
                request.first_scheduled_time = now
            request.status = Status.RUNNING
            self.running.append(request)
            plan.admitted.append(request)
            plan.scheduled.append((request, n))
            budget -= n
        return plan

    def update(self, plan: StepPlan, now: float = 0.0) -> StepResult:
        """Commit a step: computed tokens advance, finished prefills and decodes sample."""
        result = StepResult([], [])
        for request, n in plan.scheduled:
            if request.status is not Status.RUNNING:
                continue  # aborted while the step ran
            request.num_computed_tokens += n
            if request.num_computed_tokens < request.num_tokens:
                self.pool.commit(request.kv, request.hashes, request.num_computed_tokens)
                continue  # a prefill chunk that has more to go
            token = request.output_plan[len(request.output_token_ids)]
            request.output_token_ids.append(token)
            if request.num_tokens // BLOCK_SIZE > len(request.hashes):
                request.hashes = block_hashes(request.all_token_ids, request.hashes)
            self.pool.commit(request.kv, request.hashes, request.num_computed_tokens)
            if request.first_token_time is None:
                request.first_token_time = now
            request.last_token_time = now
            result.sampled.append((request, token))
            if len(request.output_token_ids) >= len(request.output_plan):
                request.status = Status.FINISHED
                request.finish_time = now
                self.running.remove(request)
                self.pool.free(request.kv)
                result.finished.append(request)
        return result
