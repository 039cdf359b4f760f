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

The slope's half-life must not be shorter than the level's: Holt's method with a trend that
adapts faster than its level overshoots and swings (a 30-minute level with an 8-minute slope
wandered 3% on steady load and crossed a replica boundary back and forth).

The level is slow on purpose (a quarter of an hour by default): it is the demand the headroom
is kept over, and a slow level is what lets the headroom absorb counting noise and
minute-to-minute swings instead of every high reading buying a replica. A slow level alone
would meet a burst late and give capacity back long after a drop, so a fast estimate of the
present rate (`RecentRate`, a minute's half-life) runs beside it (`RateForecaster`): while the
present rate stays within the headroom around the level, the level moves slowly; once it is
surely outside (by more than JUMP_NOISE_SIGMAS of counting noise, RecentRate.surely_outside),
demand has changed, not wobbled, and the level jumps to it. Slower still (30 minutes) was
cheaper on the 24 h trace but trails a steady decline by so much that a replica stays 22
minutes after it could go (tests/autoscaler/test_controller.py, the smooth decline test).

A new level (a controller just started or restarted) is the weighted mean of the readings it
has, not a settled level's 2% step towards each: otherwise a first reading 6% high, one
standard deviation of a 30 s count at 27 req/s, held an extra replica for most of an hour.
It learns no slope until it has a half-life of history. Until then it is young: the part of
its noise beyond a settled level's (`RateForecaster.unsettled_noise`) is what its rises are
discounted by (stabilise.py).

`HoltForecaster.noise` is the forecast's own spread on steady Poisson counts, the slope's
wander included (1.47 times a plain EWMA's at the defaults); the scale-down band's floor is a
multiple of it (stabilise.py).

Real traffic is burstier than Poisson: batch clients send requests in bunches, so a 30 s count
varies by more than its mean. Judged as Poisson, such a series looked surely changed when it
was not: with counts 3 times as variable as Poisson's, steady load on a replica boundary
reversed the pool 56 times over 40 four-hour runs (tests/autoscaler/test_controller.py, the
boundary grid). So each model's index of dispersion (a count's variance over its mean) is
measured from its readings (`Dispersion`), and the forecast's noise and the jump test's
margin are both widened by its square root (2 reversals in the same runs). It is never taken
below Poisson's 1. What it does not see is burstiness slower than a scrape (a rate that
swings for minutes at a time): that is the measured spread's part of the band (stabilise.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

# How surely the present rate must be outside the headroom around the level before the level
# jumps to it, in standard deviations of counting noise (RecentRate.surely_outside). At 3 a
# steady Poisson load almost never jumps on noise alone. On the 24 h trace 2 and 3 cost within 1/day
# of each other at the same SLO attainment (with a 30-minute level, 2 cost 1 point more).
JUMP_NOISE_SIGMAS = 3.0
# Dispersion is a weighted mean over an hour of readings (about 350 at 30 s; on 4 h of steady
# counts it lands within about 20% of the truth), slower than the level it corrects.
DISPERSION_HALF_LIFE_S = 3600.0
# A reading counts for at most this many times the estimate (3 sds of a Gaussian difference).
DISPERSION_CLIP = 9.0


def counted_seconds(half_life_s: float) -> float:
    """Seconds of arrivals an EWMA with half-life `half_life_s` weighs: 2 tau, with time
    constant tau = half_life / ln 2."""
    return 2.0 * half_life_s / math.log(2)


def counting_noise(rate: float, half_life_s: float) -> float:
    """Relative standard deviation of an EWMA (half-life `half_life_s`) of a Poisson rate
    `rate` per second: it counts `counted_seconds` of arrivals, so its variance is rate over
    that. Infinite at a rate of 0."""
    if rate <= 0:
        return math.inf
    return 1.0 / math.sqrt(counted_seconds(half_life_s) * rate)


@lru_cache(maxsize=64)
def _squared_response(
    dt_s: float, level_half_life_s: float, trend_half_life_s: float, horizon_s: float
) -> float:
    """Sum of squares of a HoltForecaster's forecast (level + slope x horizon) after one
    reading of 1 and zeros after it, readings `dt_s` apart: its noise gain."""
    a, b = weight(dt_s, level_half_life_s), weight(dt_s, trend_half_life_s)
    level = slope = total = 0.0
    steps = math.ceil(60.0 * max(level_half_life_s, trend_half_life_s) / dt_s)
    for k in range(steps):
        predicted = level + slope * dt_s
        new_level = predicted + a * ((1.0 if k == 0 else 0.0) - predicted)
        slope += b * ((new_level - level) / dt_s - slope)
        level = new_level
        total += (level + slope * horizon_s) ** 2
    return total


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
    # How much of a full history the level has seen: 0 before the first observation, to 1
    # after many half-lives (the weights' sum, 1 - 2^(-elapsed / half_life)).
    seen: float = 0.0

    def update(self, t: float, value: float) -> None:
        """Take in the observation `value` made at time `t` (seconds, monotonic)."""
        if self.level is None or self.last_t is None:
            self.level, self.last_t, self.last_value = value, t, value
            return
        dt = t - self.last_t
        if dt <= 0:
            return
        a = weight(dt, self.level_half_life_s)
        if self.seen == 0.0:
            self.seen = a  # the first observation stood for as long as this one
        self.seen += a * (1.0 - self.seen)
        # Until it has seen a half-life of history the level is the weighted mean of what it
        # has (weight a / seen: the first readings count in full rather than as a 15-minute
        # level's 2%), with no slope: a handful of counts have no trend to speak of.
        settled = self.settled
        # Holt: project the level forward with the current slope, then pull it towards the
        # observation; the slope follows the level's own movement.
        predicted = self.level + self.slope * dt
        new_level = predicted + a / self.seen * (value - predicted)
        if settled:
            b = weight(dt, self.trend_half_life_s)
            self.slope += b * ((new_level - self.level) / dt - self.slope)
        self.level, self.last_t, self.last_value = new_level, t, value

    @property
    def settled(self) -> bool:
        """Whether the level has seen a half-life of history (and so learns a slope)."""
        return self.seen >= 0.5

    def noise(self, rate: float, dt_s: float) -> float:
        """Relative standard deviation of this forecast on a steady Poisson rate `rate` per
        second read every `dt_s` seconds (each reading a count over `dt_s`): the sum of the
        squares of the filter's response to one reading, times one reading's variance,
        rate / dt. The slope makes the level wander: at equal 15-minute half-lives this is
        1.4 times counting_noise of a plain EWMA with the level's half-life, 1.47 with a
        2-minute horizon. Infinite at a rate of 0."""
        if rate <= 0 or dt_s <= 0:
            return math.inf
        gain = _squared_response(
            dt_s, self.level_half_life_s, self.trend_half_life_s, self.horizon_s
        )
        return math.sqrt(gain / (rate * dt_s))

    def settling(self, dt_s: float | None = None) -> float:
        """How many times noisier the level is now than once settled: a weighted mean of the
        readings so far (weights falling by 1 - a per reading) has variance (2 - seen) / seen
        times a settled EWMA's, so sqrt of that; 1 once settled (or before any reading).
        Times `noise`, an upper bound while the level learns no slope (seen < 0.5; the
        slope's wander is not there yet, measured 0.7 of it), then close (0.94 at an hour).
        A level of one reading has seen nothing yet; given `dt_s`, the seconds that reading
        counted, it counts as that much history."""
        seen = self.seen
        if seen == 0.0 and self.level is not None and dt_s is not None:
            seen = weight(dt_s, self.level_half_life_s)
        if not 0.0 < seen < 1.0:
            return 1.0
        return math.sqrt((2.0 - seen) / seen)

    def jump_to(self, value: float) -> None:
        """Set the level to `value`, keeping the slope: a step is not a trend."""
        self.level = value

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


@dataclass
class RecentRate:
    """An EWMA of one series with a short half-life: the rate arriving now, to within a
    minute or so, with more noise than the level."""

    half_life_s: float
    value: float | None = None
    last_t: float | None = None

    def update(self, t: float, value: float) -> None:
        """Take in the observation `value` made at time `t` (seconds, monotonic)."""
        if self.value is None or self.last_t is None:
            self.value, self.last_t = value, t
            return
        if t <= self.last_t:
            return
        self.value += weight(t - self.last_t, self.half_life_s) * (value - self.value)
        self.last_t = t

    def surely_outside(self, low: float, high: float, sigmas: float) -> bool:
        """Whether the rate is more than `sigmas` standard deviations of counting noise below
        `low` or above `high`. Judged on the square root of the count the rate stands for
        (`counted_seconds` of arrivals), where Poisson noise has the same
        spread, 1/2, at any rate: judged by the rate's own noise, a run of low counts at a
        few requests a scrape looked surer than it was (its noise shrinks with it), and the
        level jumped on noise. At many requests a scrape this is `counting_noise` of the edge
        passed. False before the first observation. For traffic burstier than Poisson the
        caller widens `sigmas` by the square root of its dispersion (RateForecaster)."""
        if self.value is None:
            return False
        seconds = counted_seconds(self.half_life_s)
        root, margin = math.sqrt(max(0.0, self.value) * seconds), sigmas / 2.0
        return (
            root > math.sqrt(max(0.0, high) * seconds) + margin
            or root < math.sqrt(max(0.0, low) * seconds) - margin
        )


@dataclass
class Dispersion:
    """How much burstier than Poisson a series of rates is: its index of dispersion, the
    variance of a reading's count over its mean (1 for Poisson arrivals). Estimated from
    consecutive readings, whose difference has variance index x level x (1/dt + 1/dt_prev)
    when demand is steady over the two (a 30 s trend is small beside 30 s counting noise), as a
    weighted mean over `half_life_s` of each difference's square over that. A step or a burst
    is a change of demand, not burstiness: one reading moves the estimate at most as if it
    were DISPERSION_CLIP times it. Readings at a level of 0 carry no measure and are skipped.

    It is the mean of the readings it has, with no prior, so its first minutes are noisy: five
    readings after a start at 5 req/s, a quarter of 200 seeds measured Poisson counts over 1.5,
    widening the jump test for those minutes. Starting instead from Poisson's 1, worth 10
    minutes of readings, met a burst after a start 30 s sooner (median) but cost calm at 0.2
    req/s on counts twice as variable as Poisson's (10 reversals in 16 boundary runs against 2),
    where the first hour's jumps on noise set the level on a worse path."""

    half_life_s: float = DISPERSION_HALF_LIFE_S
    estimate: float = 1.0  # Poisson's, until the first difference
    # How much history the estimate stands for (as HoltForecaster.seen).
    seen: float = 0.0
    last_t: float | None = None
    last_dt: float | None = None
    last_value: float | None = None

    def update(self, t: float, value: float, level: float) -> None:
        """Take in the reading `value` (a rate) made at time `t`, with demand at `level`."""
        if self.last_t is not None and t <= self.last_t:
            return
        dt = None if self.last_t is None else t - self.last_t
        if (
            dt is not None
            and self.last_dt is not None
            and self.last_value is not None
            and level > 0
        ):
            poisson = level * (1.0 / dt + 1.0 / self.last_dt)
            ratio = min((value - self.last_value) ** 2 / poisson, DISPERSION_CLIP * self.index())
            # The weighted mean of what it has read (weights a / seen, as HoltForecaster's new
            # level): the first difference replaces the starting 1 outright.
            a = weight(dt, self.half_life_s)
            self.seen += a * (1.0 - self.seen)
            self.estimate += a / self.seen * (ratio - self.estimate)
        self.last_t, self.last_dt, self.last_value = t, dt, value

    def index(self) -> float:
        """The estimated index of dispersion, never below 1 (Poisson): fewer-than-Poisson
        arrivals are not what steady demand is, and a low estimate is noise."""
        return max(1.0, self.estimate)


@dataclass
class RateForecaster:
    """A request rate's forecast: a slow Holt level that jumps to the present rate once that is
    surely outside `band` (the headroom, a fraction) around it (the module's rule)."""

    holt: HoltForecaster
    present: RecentRate | None
    band: float
    dispersion: Dispersion = field(default_factory=Dispersion)

    def update(self, t: float, value: float) -> None:
        """Take in the observation `value` made at time `t` (seconds, monotonic)."""
        self.holt.update(t, value)
        self.dispersion.update(t, value, self.holt.smoothed() or 0.0)
        if self.present is None:
            return
        self.present.update(t, value)
        level, present = self.holt.level, self.present.value
        if level is None or present is None:
            return
        # Counts D times as variable as Poisson's are sqrt(D) times as far from their mean.
        sigmas = JUMP_NOISE_SIGMAS * math.sqrt(self.dispersion.index())
        if self.present.surely_outside(
            level / (1.0 + self.band), level * (1.0 + self.band), sigmas
        ):
            self.holt.jump_to(present)

    def smoothed(self) -> float | None:
        """The level (HoltForecaster.smoothed)."""
        return self.holt.smoothed()

    def forecast(self) -> float | None:
        """The level's forecast (HoltForecaster.forecast)."""
        return self.holt.forecast()

    def noise(self, dt_s: float) -> float:
        """Relative counting noise of the forecast at its level, read every `dt_s` seconds:
        HoltForecaster.noise times the square root of the measured dispersion, and times
        HoltForecaster.settling while a new level is still the mean of a few readings (so a
        (re)started controller does not give back a replica on a dip of its young level);
        0 before the first observation or at a level of 0, where there is no level to judge
        noise against."""
        return self._steady_noise(dt_s) * self.holt.settling(dt_s)

    @property
    def young(self) -> bool:
        """Whether there is a level above 0 that has not settled yet (HoltForecaster.settled):
        exactly when `unsettled_noise` is above 0."""
        return bool(self.holt.smoothed()) and not self.holt.settled

    def unsettled_noise(self, dt_s: float) -> float:
        """The part of `noise` that only a young level has (relative; 0 unless `young`): how
        much a rise of the young level must be discounted by (stabilise.py)."""
        if not self.young:
            return 0.0
        return self._steady_noise(dt_s) * (self.holt.settling(dt_s) - 1.0)

    def _steady_noise(self, dt_s: float) -> float:
        level = self.holt.smoothed()
        if not level:
            return 0.0
        return self.holt.noise(level, dt_s) * math.sqrt(self.dispersion.index())

    def falling(self, dt_s: float, sigmas: float) -> bool:
        """Whether the level is surely falling: its slope over one time constant of the level
        (half-life / ln 2) is more than `sigmas` times the forecast's counting noise below
        it (readings every `dt_s` seconds)."""
        level = self.holt.smoothed()
        if not level:
            return False
        tau = self.holt.level_half_life_s / math.log(2)
        return self.holt.slope * tau < -sigmas * self.noise(dt_s) * level
