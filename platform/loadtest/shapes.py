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
        """The most users Locust can have started before the test ends: from none at
        `spawn_rate`, in Locust's batches of floor(rate) users (at least one), the first batch
        at once; never more than `users`. A spike's peak arrives at once. An upper bound: a
        shape whose peak comes late has less time to reach it."""
        if self.kind == "spike":
            return self.users
        batch = max(1, math.floor(self.spawn_rate))
        batches = math.ceil(self.duration_s * self.spawn_rate / batch)
        return min(self.users, batch * batches)

    def tick(self, elapsed_s: float) -> tuple[int, float] | None:
        """Locust's LoadTestShape.tick answer: (users, spawn rate), or None to stop. A spike
        arrives at once (that is what a spike is); other changes ramp at `spawn_rate`."""
        users = self.users_at(elapsed_s)
        if users is None:
            return None
        rate = float(self.users) if self.kind == "spike" else self.spawn_rate
        return users, rate


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds. ValueError names the text on anything else."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 10m, 1.5h)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"duration {text!r} must be more than 0 and at most 7 days")
    return seconds
