"""Demand swinging faster than the controller's level: how many requests arrive beyond the
capacity it holds, at the default headroom and at a headroom equal to the swing.

The controller runs as shipped (default settings but the headroom), with the real metrics
source and exact planner, on the controller tests' harness (`tests/autoscaler/
test_controller.py`'s `Loop`: a synthetic gateway counting Poisson arrivals, an in-memory
fleet, a simulated clock; replicas serve the step they are applied). One model, gemma-4-E2B,
on replicas of 1 req/s; its rate is `base x (1 + amplitude x sin(2 pi t / period))`. Requests
past the replicas' capacity count as missed, the rest as met: the trace benchmark's fluid
estimate, which counts no queue and so is the better case. The first hour is left out.

    ./dev run python benchmarks/autoscaler_swings/run.py > benchmarks/autoscaler_swings/results.md
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests" / "autoscaler"))
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from test_controller import INTERVAL, Loop  # noqa: E402

from gemma_fleet.autoscaler.settings import ControllerSettings  # noqa: E402

MODEL, POOL = "gemma-4-E2B", "gemma-4-e2b"
WARM_UP_S = 3600.0


def sine(base: float, amplitude: float, period_s: float) -> Callable[[str, float], float]:
    def rate(model: str, t: float) -> float:
        if model != MODEL:
            return 0.0
        return base * (1 + amplitude * math.sin(2 * math.pi * t / period_s))

    return rate


def run_one(
    base: float, amplitude: float, period_s: float, headroom: float, seed: int, hours: float
) -> tuple[float, float]:
    """(% of requests beyond capacity, mean replicas held) after the warm-up hour."""
    rate = sine(base, amplitude, period_s)
    settings = ControllerSettings(interval_s=INTERVAL, headroom=headroom)
    loop = Loop(rate, settings, seed=seed, capacity=1.0)
    loop.run(hours * 3600)
    held = loop.series(POOL)
    times = [t for t, _ in held]
    beyond = offered = replica_s = 0.0
    t, end = held[0][0] + WARM_UP_S, held[-1][0]
    seconds = 0
    while t < end:
        replicas = held[bisect.bisect_right(times, t) - 1][1]
        load = rate(MODEL, t)
        offered += load
        beyond += max(0.0, load - replicas)
        replica_s += replicas
        seconds += 1
        t += 1.0
    return 100 * beyond / offered, replica_s / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--hours", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    columns = ["period", "base req/s", "swing", "headroom", "beyond capacity, % per seed"]
    print("| " + " | ".join([*columns, "mean replicas held"]) + " |")
    print("| ---: | ---: | ---: | ---: | --- | --- |")
    for period_s in (120.0, 300.0):
        for base in (2.5, 2.7):
            for amplitude in (0.15, 0.3):
                for headroom in (0.1, amplitude):
                    runs = [
                        run_one(base, amplitude, period_s, headroom, seed, args.hours)
                        for seed in range(1, args.seeds + 1)
                    ]
                    lost = ", ".join(f"{b:.2f}" for b, _ in runs)
                    held = ", ".join(f"{r:.2f}" for _, r in runs)
                    print(
                        f"| {period_s:.0f} s | {base} | +-{amplitude:.0%} | {headroom:.2f} "
                        f"| {lost} | {held} |",
                        flush=True,
                    )
    print(f"\n{args.seeds} seeds, {args.hours:g} h each; {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
