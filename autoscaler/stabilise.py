"""Stabilised demand: the rate per model the controller plans for, moved up quickly and down
only after demand has stayed lower for a while.

Kubernetes' HorizontalPodAutoscaler stabilises its replica recommendations per target; the
controller does the same, but per model and on demand rather than per pool on replicas:

- a rise passes once every forecast of the last `scale_up_delay_s` is above the planned rate
  (the planned rate becomes the LOWEST of them; with the default 0, this step's forecast),
  each discounted by the noise a young level has beyond a settled one's (`unsettled`);
- a fall passes once every forecast of the last `scale_down_delay_s` is below it by more than
  the band (the planned rate becomes the HIGHEST of them, plus the band);
- otherwise the planned rate stays.

Why per model and on demand: a model served by several pools (L4 and H100, say) is one
quantity the planner splits among them, and the split changes with the demand level. Windows on
each pool's replica count kept the larger count of every pool over the window, so around a
re-layout the fleet paid for the old and the new layout side by side until both windows passed
(on the trace evaluation: +51% over the per-interval optimum with windows per pool, +21% with
windows on demand; benchmarks/autoscaler_trace/README.md). Stabilising the demand gives the
planner one calm input, and it returns one coherent layout for it.

Why the band: with demand steady right on a replica boundary, a 5-minute window now and then
holds only low readings; falling to exactly its highest forecast put the plan just under the
boundary, and the next high reading raised it again (0-4 reversals in 4 h over 8 noise seeds at
a 30 s level half-life, 6-10 at 60 s). Landing the band above the window's highest forecast
leaves room for that next reading: 0 reversals on all of them, and fewer replica moves on the
trace (benchmarks/autoscaler_trace/README.md). A rise still passes at the first forecast above
the planned rate, so the band never delays capacity.

Why the band follows the noise: a fixed band is paid on every fall, noisy or not. On a slow
fall the plan trails the forecast by the band for as long as demand takes to fall that far
(the trace's 31B falls about 11% an hour in the evening: a 10% band is most of an hour of
that fall, on an H100 node), and on smooth demand there is no noisy reading to leave room
for. So, with
`band_spreads` k, the band is k times the relative spread of the model's forecasts around
their straight-line trend over the last `SPREAD_WINDOW_S`, between `MIN_BAND` and
`scale_down_band`. Measured, not modelled: the spread takes in whatever makes the forecasts
wander (Poisson counts, interval-to-interval swings of the traffic itself, scrape jitter), which
a model of counting noise alone misses. On the trace with its interval wobble the band stays
near its cap; on the same day without the wobble, fed the true rates, it sits at its floor
most of the time (benchmarks/autoscaler_trace/README.md).

Why a floor from counting noise, and why the cap does not bound it: what a half-hour spread
cannot show is how far a slow level drifts over hours, and a drift across a replica boundary
and back is a reversal. So the band is never below BAND_NOISE_SIGMAS times the forecast's own
counting noise (forecast.RateForecaster.noise, widened for traffic burstier than Poisson,
which the caller passes in), nor below `MIN_BAND`. The cap, `scale_down_band`, bounds only
the measured spread: a model served at a fraction of a request per second counts so few
requests that its forecast wanders by more than 10%, and capping the floor there brought the
reversals back (steady 0.45 req/s on a one-replica boundary, 8 noise seeds, 4 h: 2 reversals
on each of 2 seeds with the floor capped at 10%, none uncapped;
benchmarks/autoscaler_trace/README.md).

Why a young level's rise is discounted: a (re)started controller's first forecasts are the
mean of a few 30 s counts, several times noisier than the settled level the headroom and the
band are sized for. Planned as they came, a first reading a few percent high bought a replica
that the settled level gave back an hour or more later: with demand at 95% of a replica
boundary, on 10 to 25% of starts (tests/autoscaler/test_controller.py, the restart and
below-boundary tests). So a rise counts only past `unsettled`, the part of the forecast's
relative noise that only a young level has (forecast.RateForecaster.unsettled_noise; 0 once
the level has a half-life of history): the plan approaches the level from below as the noise
shrinks, which is a rise or two, not a rise and a fall. The first forecast is discounted too,
so a young plan may sit under what a restarted controller finds running; the controller
therefore holds its pools from scaling down meanwhile (hysteresis.py).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

# Seconds of forecasts the band's spread is measured over: several of the minutes-long swings
# real traffic has, short enough to follow the day's changes in how noisy a model is.
SPREAD_WINDOW_S = 1800.0
# Fewer forecasts than this say nothing about spread: the band is then `scale_down_band` (or
# the floor, where that is higher).
MIN_SPREAD_SAMPLES = 6
# The band never goes below this: a series smooth for half an hour may turn noisy, and the
# first noisy reading should not find the plan right on its window's highest forecast.
MIN_BAND = 0.01
# Nor below this many standard deviations of the forecast's own counting noise (the `noise`
# the controller passes in, forecast.HoltForecaster.noise): a slow level wanders over hours by
# more than its spread over half an hour shows, and a wander across a replica boundary and
# back reverses the pool. The band must span both excursions, so about twice the largest
# wander a few hours hold: steady load just under a boundary at 0.45, 2.7, 5.45 and 20 req/s,
# 8 noise seeds, 4 h each: one reversal at 4 sds (one 20 req/s seed), none at 5 or 6. On the
# 24 h trace 5 costs 0.9% a day more than 4 (benchmarks/autoscaler_trace/README.md).
BAND_NOISE_SIGMAS = 5.0
# A fall is not a wander: while the forecast's slope says it is surely falling (by more than
# this many sds of its counting noise per time constant of the level, RateForecaster.falling),
# the controller passes no noise, so the band is the measured spread's. The floor held a
# replica after every peak and through every fall; on the 24 h trace this gave back 4.2/day
# (seed 1) and 5.1 (seed 2), and steady load on a boundary stays calm (at 2 sds it reversed
# 3 of the 40 boundary runs, at 3 none).
FALL_NOISE_SIGMAS = 3.0


@dataclass
class _Series:
    planned: float
    forecasts: deque[tuple[float, float]] = field(default_factory=deque)


class DemandStabiliser:
    """Planned request rate per model from its forecasts (the module's rule)."""

    def __init__(
        self,
        scale_up_delay_s: float,
        scale_down_delay_s: float,
        scale_down_band: float = 0.0,
        band_spreads: float | None = None,
    ) -> None:
        """`scale_down_band` is the band, or with `band_spreads` its cap (the module's rule)."""
        self.scale_up_delay_s = scale_up_delay_s
        self.scale_down_delay_s = scale_down_delay_s
        self.scale_down_band = scale_down_band
        self.band_spreads = band_spreads
        self._series: dict[str, _Series] = {}

    def planned(
        self, model: str, at: float, forecast: float, noise: float = 0.0, unsettled: float = 0.0
    ) -> float:
        """Take in `model`'s forecast rate at time `at` (seconds, monotonic) and return the
        rate to plan for; `noise` is the forecast's relative counting noise (forecast.
        RateForecaster.noise), which the band does not go below BAND_NOISE_SIGMAS of, and
        `unsettled` the part of it only a young level has, which a rise is discounted by.
        The first forecast of a model is planned as it is, less that discount."""
        # A young level's rise counts only past its unsettled noise (the module's rule).
        young = max(0.0, 1.0 - unsettled)
        series = self._series.get(model)
        if series is None:
            series = self._series[model] = _Series(planned=forecast * young)
        series.forecasts.append((at, forecast))
        keep = max(self.scale_up_delay_s, self.scale_down_delay_s)
        if self.band_spreads is not None:
            keep = max(keep, SPREAD_WINDOW_S)
        while series.forecasts and series.forecasts[0][0] < at - keep:
            series.forecasts.popleft()
        up = young * min(f for t, f in series.forecasts if t >= at - self.scale_up_delay_s)
        down = max(f for t, f in series.forecasts if t >= at - self.scale_down_delay_s)
        if up > series.planned:
            series.planned = up
        else:
            band = self.band(model, noise)
            if down * (1.0 + band) < series.planned:
                series.planned = down * (1.0 + band)
        return series.planned

    def band(self, model: str, noise: float = 0.0) -> float:
        """The scale-down band `model`'s next fall would land with, for a forecast with
        relative counting noise `noise` (the module's rule: with `band_spreads`, the measured
        spread's multiple capped at `scale_down_band`, or the cap before there is enough to
        measure, and never below the floor)."""
        series = self._series.get(model)
        if self.band_spreads is None or series is None:
            return self.scale_down_band
        floor = max(MIN_BAND, BAND_NOISE_SIGMAS * noise)
        spread = relative_spread(series.forecasts)
        if spread is None:
            return max(floor, self.scale_down_band)
        return max(floor, min(self.scale_down_band, self.band_spreads * spread))


def relative_spread(points: Sequence[tuple[float, float]]) -> float | None:
    """Standard deviation of `points` (time, value) around their least-squares line, over their
    mean value; None with fewer than MIN_SPREAD_SAMPLES points or a mean of 0."""
    n = len(points)
    if n < MIN_SPREAD_SAMPLES:
        return None
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    if mean_v <= 0:
        return None
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / sxx if sxx > 0 else 0.0
    squares = sum((v - mean_v - slope * (t - mean_t)) ** 2 for t, v in points)
    return math.sqrt(squares / (n - 2)) / mean_v
