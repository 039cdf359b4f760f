"""What flows between the autoscaler's parts: demand in, a plan out.

The fleet file's model pools are the candidates: each is one model in one configuration
(quantization, max_model_len, TP) on one node pool, and a model may have several (31B on H100 at
TP=2 and on A100-80GB at TP=2, say). The planner chooses how many replicas each pool runs and
how many nodes each node pool needs; the controller applies that with hysteresis; actuators
write it to Ray Serve or to a RayService. Plain frozen dataclasses: these never cross a process
boundary unvalidated (files and HTTP go through pydantic models at their edges).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Slo:
    """Latency objectives every replica must hold at the load the plan gives it."""

    ttft_p95_s: float = 2.0
    tpot_p95_s: float = 0.1


@dataclass(frozen=True)
class ModelDemand:
    """Load offered to one catalog model (e.g. gemma-4-31B), whichever pool serves it."""

    requests_per_s: float
    mean_prompt_tokens: float
    mean_output_tokens: float


@dataclass(frozen=True)
class Plan:
    """Replicas per model pool and nodes per node pool, with why.

    `feasible` is False when demand cannot be met within the pools' limits; `shortfall` then
    says, per model, what is missing in words a person can act on. `note` says why a plan
    other than the optimum was chosen (the incumbent rule keeps a running layout).
    """

    replicas: Mapping[str, int]
    nodes: Mapping[str, int]
    cost_per_hour: float
    feasible: bool = True
    shortfall: Mapping[str, str] = field(default_factory=dict)
    binding: tuple[str, ...] = ()
    cost_per_model: Mapping[str, float] = field(default_factory=dict)
    # How this plan was chosen when not simply the optimum (autoscaler/incumbent.py).
    note: str = ""
    # The re-layout that only saves money which this plan starts or puts off (incumbent.py's
    # break-even rule); None when the plan is no such re-layout.
    saving_relayout: SavingRelayout | None = None


@dataclass(frozen=True)
class SavingRelayout:
    """A re-layout of replicas that already meet demand, to a cheaper layout: what it saves
    per hour, what its replicas cost while they load beside the running ones, and whether
    the plan puts it off (keeping the running layout) or starts it."""

    saving_per_hour: float
    price: float
    put_off: bool
