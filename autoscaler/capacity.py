"""How many requests per second one replica of a model pool sustains while its SLO holds.

The figure comes from the GPU simulator (the same KV pool, scheduler and roofline that serve
simulated requests, `gemma_fleet.deployments.engines.simulator`), driven here as a discrete-event
simulation in virtual time: Poisson arrivals at a rate, prompt and output lengths drawn around
the workload's means, vLLM-style continuous batching, and the p95 of time to first token and of
time per output token over the requests. The capacity is the highest rate at which both p95s stay
within the SLO, found by doubling then bisecting the rate. Or it comes from a measured profile
that a user supplies (`ProfileFile`, a YAML grid of rates per prompt/output length).

Simulating is the slow part of planning, so the planner never does it in its loop: it asks
`CapacityModel.capacity` once per pool per workload mix before building the program, and
`CapacityModel` rounds a mix UP to a geometric grid (steps of 2^(1/8), ~9%) and caches results in
memory and optionally in a JSON file. Rounding up is conservative (longer requests never get more
capacity) and lets a slowly drifting live mix hit the cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gemma_fleet.autoscaler.plan import ModelDemand, Slo
from gemma_fleet.config_file import load_model
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import profile_for, roofline_for
from gemma_fleet.deployments.engines.simulator.kv_pool import KvPool
from gemma_fleet.deployments.engines.simulator.scheduler import Scheduler, SimRequest
from gemma_fleet.deployments.pools.schema import ModelPool, NodePool
from gemma_fleet.deployments.pools.serve_app import simulator_config as served_config
from gemma_fleet.vram import ProfileError

# Bump when the way capacity is computed changes: it is part of every cache key.
CAPACITY_MODEL_VERSION = "2"
# Mix grid: lengths are rounded up to 2^(k/8) tokens.
GRID_STEPS_PER_OCTAVE = 8
# A run whose mean TTFT rises by more than this fraction of the TTFT objective from its first
# measured half to its second is overloaded (its queue grows), whatever its p95 says.
DRIFT_TOLERANCE = 0.25
# No replica serves this many requests per second; reaching it means the search is broken.
MAX_RATE = 1e5


def default_cache_path() -> Path:
    """Where simulated capacities are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gemma-fleet" / "capacity.json"


@dataclass(frozen=True)
class Mix:
    """A workload mix: mean prompt and output tokens per request."""

    prompt_tokens: int
    output_tokens: int

    @classmethod
    def of(cls, demand: ModelDemand) -> Mix:
        return cls(
            max(1, math.ceil(demand.mean_prompt_tokens)),
            max(1, math.ceil(demand.mean_output_tokens)),
        )

    def on_grid(self) -> Mix:
        """This mix with both lengths rounded up to the capacity grid."""
        return Mix(_grid_up(self.prompt_tokens), _grid_up(self.output_tokens))


def _grid_up(n: int) -> int:
    k = math.ceil(GRID_STEPS_PER_OCTAVE * math.log2(n) - 1e-9)
    return max(n, math.ceil(2 ** (k / GRID_STEPS_PER_OCTAVE) - 1e-9))


@dataclass(frozen=True)
class SimulationSettings:
    """How long and how precisely each rate is simulated. With the defaults, different seeds
    give capacities within about +-10% of each other (the p95 of a few hundred requests is
    noisy); more requests narrow that at proportional cost. Tests shrink `requests`."""

    requests: int = 400
    warmup_fraction: float = 0.25  # the first requests meet an engine still filling: not measured
    length_spread: float = 0.5  # lengths are uniform in mean x [1 - spread, 1 + spread]
    rate_precision: float = 0.03  # bisection stops when hi/lo - 1 is below this
    # Every run lasts at least this many lone-request latencies (rate x e2e x this requests).
    min_run_latencies: float = 12.0
    seed: int = 0


@dataclass(frozen=True)
class Capacity:
    """Capacity of one replica at SLO for one mix. `requests_per_s` 0 means the pool cannot
    serve the mix at the SLO at any load, and `reason` says why."""

    requests_per_s: float
    ttft_p95_s: float  # at that rate (at one request when the capacity is 0)
    tpot_p95_s: float
    limit: str  # what stops more load: "ttft", "tpot", "length", "profile"
    source: str  # "simulator" or "profile <file>"
    reason: str = ""


# ---- the simulation ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    passed: bool
    ttft_p95_s: float
    tpot_p95_s: float
    limit: str


def _allowed_violations(n: int) -> int:
    """Requests that may exceed the SLO while the nearest-rank p95 of `n` still holds."""
    return n - math.ceil(0.95 * n)


def _p95(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


class _Workload:
    """Arrival gaps and lengths as unit draws, scaled per rate and per mix, so that runs at
    different rates or mixes see the same pattern (results move smoothly and monotonically).
    Draws are extended on demand; the first n are the same however many are asked for."""

    def __init__(self, settings: SimulationSettings) -> None:
        self._rng = random.Random(settings.seed)
        self.gaps: list[float] = []
        self._prompt_u: list[float] = []
        self._output_u: list[float] = []
        self.spread = settings.length_spread

    def ensure(self, n: int) -> None:
        while len(self.gaps) < n:
            self.gaps.append(-math.log(1.0 - self._rng.random()))
            self._prompt_u.append(self._rng.random())
            self._output_u.append(self._rng.random())

    def lengths(self, n: int, mix: Mix, max_model_len: int) -> list[tuple[int, int]]:
        self.ensure(n)
        out = []
        for pu, ou in zip(self._prompt_u[:n], self._output_u[:n], strict=True):
            prompt = max(1, round(mix.prompt_tokens * (1 - self.spread + 2 * self.spread * pu)))
            output = max(1, round(mix.output_tokens * (1 - self.spread + 2 * self.spread * ou)))
            # A draw longer than the context is cut, as a client would cut its prompt.
            prompt = max(1, min(prompt, max_model_len - output))
            out.append((prompt, output))
        return out


class _Replica:
    """One simulated replica, built from the simulator's own parts."""

    def __init__(self, config: SimulatorConfig) -> None:
        prof = profile_for(config)
        if not prof.fits:
            raise ProfileError(prof.reason)
        self.config = config
        self.profile = prof
        self.roofline = roofline_for(config)

    def run(
        self,
        rate: float,
        lengths: list[tuple[int, int]],
        gaps: list[float],
        slo: Slo,
        warmup: int,
    ) -> _Run:
        """Serve the requests arriving at `rate` and judge the p95s against `slo`. Stops as soon
        as more requests have missed the SLO than the p95 allows."""
        config = self.config
        pool = KvPool.from_profile(self.profile, enable_prefix_caching=config.enable_prefix_caching)
        scheduler = Scheduler(
            pool,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens,
            max_model_len=config.max_model_len,
        )
        n = len(lengths)
        measured = n - warmup
        allowed = _allowed_violations(measured)
        arrivals = []
        t = 0.0
        for gap in gaps:
            t += gap / rate
            arrivals.append(t)
        ttfts: list[float] = []
        tpots: list[float] = []
        ttft_misses = tpot_misses = 0
        now = 0.0
        next_index = 0
        done = 0
        steps = 0
        requests: list[SimRequest] = []
        while done < n:
            while next_index < n and arrivals[next_index] <= now:
                prompt_len, output_len = lengths[next_index]
                # Distinct token ids per request: no prefix-cache hits (the conservative case).
                base = 1_000 + next_index * 7_919
                prompt = [base + i for i in range(prompt_len)]
                request = SimRequest(f"r{next_index}", prompt, [5] * output_len)
                request.arrival_time = arrivals[next_index]
                scheduler.add(request)
                requests.append(request)
                next_index += 1
            if not scheduler.has_work():
                now = arrivals[next_index]
                continue
            plan = scheduler.schedule(now)
            if not plan.scheduled:
                if plan.preempted:
                    continue
                raise RuntimeError("simulated replica stalled with work queued")
            now += self.roofline.step(plan.chunks(), plan.num_sampled()).seconds
            result = scheduler.update(plan, now)
            for request in result.finished:
                done += 1
                if int(request.request_id[1:]) < warmup:
                    continue
                assert request.first_token_time is not None and request.finish_time is not None
                ttft = request.first_token_time - request.arrival_time
                outputs = len(request.output_token_ids)
                tpot = (request.finish_time - request.first_token_time) / max(1, outputs - 1)
                ttfts.append(ttft)
                tpots.append(tpot)
                ttft_misses += ttft > slo.ttft_p95_s
                tpot_misses += tpot > slo.tpot_p95_s
            steps += 1
            if ttft_misses > allowed or tpot_misses > allowed:
                return _Run(False, _p95(ttfts), _p95(tpots), _limit(ttft_misses, tpot_misses))
            if steps % 64 == 0:
                # Requests still waiting past the TTFT objective have missed it already.
                late = sum(
                    1
                    for r in requests[warmup:next_index]
                    if r.first_token_time is None and now - r.arrival_time > slo.ttft_p95_s
                )
                if ttft_misses + late > allowed:
                    return _Run(False, _p95(ttfts), _p95(tpots), "ttft")
        # A finite run can pass above the sustainable rate: the queue grows, but not yet past
        # the objective. Such a run shows as TTFT drifting up from the first measured half to
        # the second; a stable one does not drift (beyond noise).
        by_arrival = [
            r.first_token_time - r.arrival_time
            for r in requests[warmup:]
            if r.first_token_time is not None
        ]
        half = len(by_arrival) // 2
        if half:
            drift = (
                sum(by_arrival[half:]) / (len(by_arrival) - half) - sum(by_arrival[:half]) / half
            )
            if drift > DRIFT_TOLERANCE * slo.ttft_p95_s:
                return _Run(False, _p95(ttfts), _p95(tpots), "ttft")
        return _Run(True, _p95(ttfts), _p95(tpots), _limit(ttft_misses, tpot_misses))


def _limit(ttft_misses: int, tpot_misses: int) -> str:
    return "ttft" if ttft_misses >= tpot_misses else "tpot"


def simulator_config(pool: ModelPool, node_pool: NodePool) -> SimulatorConfig:
    """The simulator configuration of one replica of `pool` on `node_pool`'s GPU, on a virtual
    clock (capacity runs as fast as the CPU allows); a served pool's speedup and seed do not
    change what a replica can sustain."""
    served = served_config(pool, node_pool)
    return served.model_copy(update={"clock": "virtual", "speedup": 1.0, "seed": 0})


def simulate_capacity(
    config: SimulatorConfig, mix: Mix, slo: Slo, settings: SimulationSettings | None = None
) -> Capacity:
    """Highest Poisson arrival rate at which one replica holds both p95 objectives for `mix`.

    Raises ProfileError when the configuration does not fit its GPU at all."""
    settings = settings or SimulationSettings()
    if mix.prompt_tokens + mix.output_tokens > config.max_model_len:
        return Capacity(
            0.0,
            0.0,
            0.0,
            "length",
            "simulator",
            f"a mean request of {mix.prompt_tokens}+{mix.output_tokens} tokens exceeds "
            f"max_model_len {config.max_model_len}",
        )
    replica = _Replica(config)
    workload = _Workload(settings)
    # One request of the mean size alone: if it misses, no load can meet the SLO.
    alone = replica.run(1.0, [(mix.prompt_tokens, mix.output_tokens)], [0.0], slo, 0)
    if not alone.passed:
        what, got, want = (
            ("TTFT", alone.ttft_p95_s, slo.ttft_p95_s)
            if alone.ttft_p95_s > slo.ttft_p95_s
            else ("TPOT", alone.tpot_p95_s, slo.tpot_p95_s)
        )
        return Capacity(
            0.0,
            alone.ttft_p95_s,
            alone.tpot_p95_s,
            alone.limit,
            "simulator",
            f"{what} {got:.3f} s for a lone {mix.prompt_tokens}+{mix.output_tokens}-token "
            f"request already exceeds the SLO's {want:.3f} s",
        )
    # A request alone takes about `e2e`; a quarter of a request in flight is a safe first rate.
    e2e = alone.ttft_p95_s + alone.tpot_p95_s * max(0, mix.output_tokens - 1)

    def run_at(rate: float) -> _Run:
        # Little's law: about rate x e2e requests are in flight. A run must last many times
        # that, or a burst the batch absorbs passes at any rate; so fast replicas get more
        # requests than `settings.requests`.
        n = max(settings.requests, math.ceil(settings.min_run_latencies * rate * e2e))
        warmup = int(n * settings.warmup_fraction)
        lengths = workload.lengths(n, mix, config.max_model_len)
        return replica.run(rate, lengths, workload.gaps[:n], slo, warmup)

    lo_rate, hi_rate = 0.0, 0.25 / max(e2e, 1e-6)
    lo_run: _Run | None = None
    while True:
        run = run_at(hi_rate)
        if not run.passed:
            break
        lo_rate, lo_run = hi_rate, run
        hi_rate *= 2
        if hi_rate > MAX_RATE:
            raise RuntimeError(f"capacity search passed {MAX_RATE:g} req/s without a miss")
    if lo_run is None:  # even a quarter request in flight misses: bisect down from there
        lo_rate = 0.0
    fail_run = run
    while lo_rate == 0.0 or hi_rate / lo_rate - 1 > settings.rate_precision:
        mid = (lo_rate + hi_rate) / 2 if lo_rate > 0 else hi_rate / 4
        run = run_at(mid)
        if run.passed:
            lo_rate, lo_run = mid, run
        else:
            hi_rate, fail_run = mid, run
        if lo_rate == 0.0 and hi_rate < 1e-4:
            break
    if lo_run is None:
        return Capacity(
            0.0,
            fail_run.ttft_p95_s,
            fail_run.tpot_p95_s,
            fail_run.limit,
            "simulator",
            f"misses the {fail_run.limit.upper()} objective at every rate tried",
        )
    return Capacity(lo_rate, lo_run.ttft_p95_s, lo_run.tpot_p95_s, fail_run.limit, "simulator")


# ---- measured profiles ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileSlo(_Strict):
    ttft_p95_s: float = Field(gt=0)
    tpot_p95_s: float = Field(gt=0)


PositiveInt = Annotated[int, Field(ge=1)]


class MeasuredProfile(_Strict):
    """Measured requests/s of one replica of one configuration at an SLO, on a grid of mean
    prompt x output lengths (rows: prompt_tokens, columns: output_tokens)."""

    model: str
    gpu: str
    quant: str = "bf16"
    tp: int = Field(1, ge=1)
    max_model_len: int | None = Field(
        None, ge=1, description="when set, the profile applies only to pools with this length"
    )
    slo: ProfileSlo
    prompt_tokens: list[PositiveInt] = Field(min_length=1)
    output_tokens: list[PositiveInt] = Field(min_length=1)
    requests_per_s: list[list[Annotated[float, Field(ge=0)]]]

    @model_validator(mode="after")
    def _grid(self) -> MeasuredProfile:
        for name, axis in (
            ("prompt_tokens", self.prompt_tokens),
            ("output_tokens", self.output_tokens),
        ):
            if any(b <= a for a, b in itertools.pairwise(axis)):
                raise ValueError(f"{name} must be strictly increasing")
        if len(self.requests_per_s) != len(self.prompt_tokens) or any(
            len(row) != len(self.output_tokens) for row in self.requests_per_s
        ):
            raise ValueError(
                f"requests_per_s must be {len(self.prompt_tokens)} rows (one per prompt_tokens) "
                f"of {len(self.output_tokens)} values (one per output_tokens)"
            )
        return self

    def matches(self, pool: ModelPool, node_pool: NodePool) -> bool:
        return (
            self.model == pool.model
            and self.gpu == node_pool.gpu
            and self.quant == pool.quant
            and self.tp == pool.tp
            and (self.max_model_len is None or self.max_model_len == pool.max_model_len)
        )

    def describe(self) -> str:
        return f"{self.model} {self.quant} tp={self.tp} on {self.gpu}"

    def rate(self, mix: Mix) -> float:
        """Requests/s at `mix`: bilinear in time per request (1/rate) between grid points, which
        is close to affine in tokens; below the grid the first row/column is used
        (conservative), above it the last two points are extended linearly."""
        times = [[math.inf if r == 0 else 1.0 / r for r in row] for row in self.requests_per_s]
        i, fi = _bracket(self.prompt_tokens, mix.prompt_tokens)
        j, fj = _bracket(self.output_tokens, mix.output_tokens)

        def at(a: int, b: int) -> float:
            return times[a][b]

        i2 = min(i + 1, len(self.prompt_tokens) - 1)
        j2 = min(j + 1, len(self.output_tokens) - 1)
        corners = (at(i, j), at(i2, j), at(i, j2), at(i2, j2))
        if any(math.isinf(c) for c in corners):
            return 0.0
        top = corners[0] + fi * (corners[1] - corners[0])
        bottom = corners[2] + fi * (corners[3] - corners[2])
        seconds = top + fj * (bottom - top)
        return 0.0 if seconds <= 0 else 1.0 / seconds


def _bracket(axis: list[int], x: int) -> tuple[int, float]:
    """Index of the grid interval holding `x` and the fraction along it; beyond the last point
    the last interval with a fraction > 1 (linear extension); before the first, 0."""
    if len(axis) == 1 or x <= axis[0]:
        return 0, 0.0
    for k in range(len(axis) - 1):
        if x <= axis[k + 1]:
            return k, (x - axis[k]) / (axis[k + 1] - axis[k])
    k = len(axis) - 2
    return k, (x - axis[k]) / (axis[k + 1] - axis[k])


class ProfileFile(_Strict):
    """A measured-profile file: `profiles: [MeasuredProfile, ...]`."""

    profiles: list[MeasuredProfile] = Field(min_length=1)


class ProfileFileError(ValueError):
    """A profile file cannot be used; the message names the file and the problem."""


def load_profiles(path: Path | str) -> ProfileFile:
    """Read and validate a measured-profile YAML file."""
    return load_model(path, ProfileFile, ProfileFileError, "profile file")


# ---- the cache the planner asks ------------------------------------------------------------


class CapacityModel:
    """Capacity per replica of each model pool, from measured profiles where a profile matches
    the pool's configuration and its SLO is at least as strict as the one asked, else from the
    simulator; cached in memory and, with `cache_path`, in a JSON file across runs."""

    def __init__(
        self,
        *,
        profiles: ProfileFile | None = None,
        profile_source: str = "profile",
        settings: SimulationSettings | None = None,
        cache_path: Path | None = None,
    ) -> None:
        self.profiles = profiles
        self.profile_source = profile_source
        self.settings = settings or SimulationSettings()
        self.cache_path = cache_path
        self.simulations = 0  # how many capacities were simulated (not served from the cache)
        self._cache: dict[str, Capacity] = {}
        if cache_path is not None and cache_path.exists():
            try:
                raw = json.loads(cache_path.read_text())
                self._cache = {k: Capacity(**v) for k, v in raw.items()}
            except (OSError, ValueError, TypeError):
                self._cache = {}  # a damaged cache is only lost time: start afresh

    def capacity(
        self, pool: ModelPool, node_pool: NodePool, demand: ModelDemand, slo: Slo
    ) -> Capacity:
        """Requests/s one replica of `pool` sustains for `demand`'s mix at `slo`."""
        mix = Mix.of(demand)
        profile = self._profile_for(pool, node_pool, slo)
        if profile is not None:
            rate = profile.rate(mix)
            return Capacity(
                rate,
                profile.slo.ttft_p95_s,
                profile.slo.tpot_p95_s,
                "profile",
                f"{self.profile_source}",
                "" if rate > 0 else f"the measured profile gives 0 req/s for {profile.describe()}",
            )
        config = simulator_config(pool, node_pool)
        grid_mix = mix.on_grid()
        key = self._key(config, grid_mix, slo)
        hit = self._cache.get(key)
        if hit is None:
            try:
                hit = simulate_capacity(config, grid_mix, slo, self.settings)
            except ProfileError as exc:
                hit = Capacity(0.0, 0.0, 0.0, "length", "simulator", f"does not fit: {exc}")
            self.simulations += 1
            self._cache[key] = hit
            self._save()
        return hit

    def _profile_for(
        self, pool: ModelPool, node_pool: NodePool, slo: Slo
    ) -> MeasuredProfile | None:
        if self.profiles is None:
            return None
        for profile in self.profiles.profiles:
            if (
                profile.matches(pool, node_pool)
                and profile.slo.ttft_p95_s <= slo.ttft_p95_s
                and profile.slo.tpot_p95_s <= slo.tpot_p95_s
            ):
                return profile
        return None

    def _key(self, config: SimulatorConfig, mix: Mix, slo: Slo) -> str:
        payload = {
            "version": CAPACITY_MODEL_VERSION,
            "config": config.model_dump(mode="json"),
            "mix": asdict(mix),
            "slo": asdict(slo),
            "settings": asdict(self.settings),
        }
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def _save(self) -> None:
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in self._cache.items()}, indent=1))
        tmp.replace(self.cache_path)  # atomic: a concurrent reader sees old or new, not half


__all__ = [
    "CAPACITY_MODEL_VERSION",
    "Capacity",
    "CapacityModel",
    "MeasuredProfile",
    "Mix",
    "ProfileFile",
    "ProfileFileError",
    "SimulationSettings",
    "load_profiles",
    "simulate_capacity",
    "simulator_config",
]
