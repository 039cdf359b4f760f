"""Smoothing and short-term forecast of demand: Holt's linear method (EWMA of the level plus an
EWMA of its slope) with weights derived from elapsed time.

Why this shape: scrape-to-scrape request rates are noisy (Poisson arrivals over a 30 s window
of a few requests per second vary by tens of percent), so the raw rate would make the plan
flicker; a plain EWMA damps the noise but lags a ramp by about one half-life; adding the
smoothed slope, projected `horizon_s` ahead (about the time a new replica needs to load its
weights), buys back that lag when demand grows. Two limits keep the projection honest:

- the slope is only ever added, never subtracted: a falling trend must not pull capacity away
  early, since scale-down is the slow, careful direction anyway;
- the forecast never exceeds the newest observation: on a ramp the level trails the newest
  sample and the slope closes that gap; after a step, an unbounded projection would overshoot
  the new level and buy a replica that then sits idle until the scale-down window passes
  (tests/autoscaler/test_controller.py, the step test, caught exactly that).

Weights come from half-lives in seconds, alpha = 1 - 2^(-dt / half_life), so a late or early
scrape counts for exactly as much time as it covers.
"""

from __future__ import annotations

from dataclasses import dataclass


def weight(dt_s: float, half_life_s: float) -> float:
    """EWMA weight of a sample that covers `dt_s` seconds (1 - 2^(-dt/half_life))."""
    if dt_s <= 0:
        return 0.0
    return float(1.0 - 2.0 ** (-dt_s / half_life_s))


@dataclass
class HoltForecaster:
    """Level and slope of one series (e.g. a model's requests per second)."""

    level_half_life_s: float
    trend_half_life_s: float
    horizon_s: float
    level: float | None = None
    slope: float = 0.0  # units per second
    last_t: float | None = None
    last_value: float | None = None

    def update(self, t: float, value: float) -> None:
        """Take in the observation `value` made at time `t` (seconds, monotonic)."""
        if self.level is None or self.last_t is None:
            self.level, self.last_t, self.last_value = value, t, value
            return
        dt = t - self.last_t
        if dt <= 0:
            return
        # Holt: project the level forward with the current slope, then pull it towards the
        # observation; the slope follows the level's own movement.
        predicted = self.level + self.slope * dt
        a = weight(dt, self.level_half_life_s)
        new_level = predicted + a * (value - predicted)
        b = weight(dt, self.trend_half_life_s)
        self.slope += b * ((new_level - self.level) / dt - self.slope)
        self.level, self.last_t, self.last_value = new_level, t, value

    def smoothed(self) -> float | None:
        """The current level (None before the first observation), never negative."""
        return None if self.level is None else max(0.0, self.level)

    def forecast(self) -> float | None:
        """Level plus the upward part of the slope over the horizon, capped at the newest
        observation when that is above the level; never negative."""
        if self.level is None:
            return None
        projected = self.level + max(0.0, self.slope) * self.horizon_s
        ceiling = max(self.level, self.last_value if self.last_value is not None else self.level)
        return max(0.0, min(projected, ceiling))
