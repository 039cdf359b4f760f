"""Load shapes: how many virtual users run at each moment of a test. Every shape is bounded in
time (it ends at `duration_s`) and in count (never more than `users`).

Pure functions of elapsed time; the Locust adapter (`gemma_fleet.loadtest.users`) asks them
once a second.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ShapeKind = Literal["constant", "step", "spike", "diurnal"]
SHAPES: tuple[ShapeKind, ...] = ("constant", "step", "spike", "diurnal")
MAX_USERS = 10_000
MAX_DURATION_S = 7 * 24 * 3600

# A day's traffic relative to its peak, hour by hour (UTC 00-23): a night trough at 04:00,
# a morning ramp, a peak after lunch and an evening shoulder. Illustrative of business-facing
# APIs, not measured from any one service.
DIURNAL = (
    0.22, 0.16, 0.12, 0.10, 0.10, 0.14, 0.25, 0.42, 0.62, 0.78, 0.88, 0.94,
    0.97, 1.00, 0.98, 0.92, 0.84, 0.74, 0.66, 0.60, 0.55, 0.46, 0.36, 0.28,
)  # fmt: skip


class ShapeSpec(BaseModel):
    """A shape and its knobs. `users` is the peak in every shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ShapeKind = "constant"
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    users: int = Field(10, ge=1, le=MAX_USERS)
    spawn_rate: float = Field(5.0, gt=0, description="users started (or stopped) per second")
    steps: int = Field(4, ge=1, le=100, description="step: how many equal steps up to `users`")
    base_fraction: float = Field(
        0.25, gt=0, le=1, description="spike: users outside the spike; diurnal: the floor"
    )
    spike_at: float = Field(0.4, ge=0, lt=1, description="spike: start, as a duration fraction")
    spike_length: float = Field(0.2, gt=0, le=1, description="spike: length, as a fraction")

    def users_at(self, elapsed_s: float) -> int | None:
        """Users wanted `elapsed_s` into the test; None once it is over."""
        if elapsed_s >= self.duration_s:
            return None
        frac = elapsed_s / self.duration_s
        if self.kind == "constant":
            return self.users
        if self.kind == "step":
            step = min(self.steps - 1, int(frac * self.steps))
            return max(1, math.ceil(self.users * (step + 1) / self.steps))
        base = max(1, round(self.users * self.base_fraction))
        if self.kind == "spike":
            start = self.spike_at * self.duration_s
            # rounded: 0.4 + 0.2 is 0.6000000000000001 in floats
            inside = start <= elapsed_s < round(start + self.spike_length * self.duration_s, 6)
            return self.users if inside else base
        # diurnal: the whole day compressed into the duration, linear between the hours
        hour = frac * 24
        low = int(hour) % 24
        level = DIURNAL[low] + (DIURNAL[(low + 1) % 24] - DIURNAL[low]) * (hour - int(hour))
        return max(base, round(self.users * level))

    def most_users_started(self) -> int:
        """The most users Locust runs at once before the test ends. Its local runner asks the
        shape once a second and, whenever the answer changes, restarts its ramp from the users
        it has: a batch of floor(rate) users (at least one) at once, then a batch every
        floor(rate)/rate seconds until the target. So a spike's peak arrives at once, a step
        gains a batch at each step, and a diurnal shape, whose target moves most seconds,
        gains one nearly every second whatever the rate."""
        return _most_running(self._targets(), self._ramp_rate(), self.users, self.duration_s)

    def spawn_rate_to_start(self, users: int) -> float:
        """A spawn rate, to the hundredth, at which `users` users are running before the end,
        found by bisection: the slowest, except where a rate just under a whole number starts
        more than that number does (Locust's batch is floor(rate): in a 2.7 s test 2.99 a
        second starts 10 users, five batches of two, and 3 a second 9, three of three)."""
        if self.kind == "spike":
            return self.spawn_rate  # a spike starts its users at once, whatever the rate
        targets = self._targets()
        low, high = 1, 100 * users  # hundredths of a user a second; `users` a second starts all
        while low < high:
            mid = (low + high) // 2
            if _most_running(targets, mid / 100, users, self.duration_s) >= users:
                high = mid
            else:
                low = mid + 1
        return low / 100

    def _ramp_rate(self) -> float:
        return float(self.users) if self.kind == "spike" else self.spawn_rate

    def _targets(self) -> list[tuple[int, int]]:
        """(second, users wanted) at each whole second at which the users wanted change: when
        Locust, asking once a second, starts a new ramp."""
        if self.kind == "constant":
            return [(0, self.users)]  # a week-long test need not be walked second by second
        changes: list[tuple[int, int]] = []
        for second in range(math.ceil(self.duration_s)):
            users = self.users_at(second)
            assert users is not None  # every second before the end has a count
            if not changes or changes[-1][1] != users:
                changes.append((second, users))
        return changes

    def tick(self, elapsed_s: float) -> tuple[int, float] | None:
        """Locust's LoadTestShape.tick answer: (users, spawn rate), or None to stop. A spike
        arrives at once (that is what a spike is); other changes ramp at `spawn_rate`."""
        users = self.users_at(elapsed_s)
        if users is None:
            return None
        return users, self._ramp_rate()


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _most_running(
    targets: list[tuple[int, int]], rate: float, users: int, duration_s: float
) -> int:
    """The most users running at once when Locust ramps to each (second, users) target in
    turn at `rate`, each ramp's first batch at once; never more than `users`."""
    batch = max(1, math.floor(rate))
    wait = batch / rate
    running = peak = 0
    for (began, goal), (ends, _) in zip(targets, [*targets[1:], (duration_s, 0)], strict=True):
        # batches land at began + k * wait for k = 0, 1, ...; those before `ends` count (the
        # epsilon keeps a batch due exactly at the end out, as float division may not)
        landed = math.ceil((ends - began) / wait - 1e-9)
        change = min(landed * batch, abs(goal - running))
        running += change if goal > running else -change
        peak = max(peak, running)
        if peak >= users:
            return users
    return peak


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds. ValueError names the text on anything else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 10m, 1.5h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"duration {text!r} must be more than 0 and at most 7 days")
    return seconds
