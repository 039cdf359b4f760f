"""The demand forecast (autoscaler/forecast.py): a slow Holt level that jumps to the present rate
once that is surely outside the headroom around it. Poisson counts over 30 s scrapes, seeded."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from gemma_fleet.autoscaler.forecast import (
    JUMP_NOISE_SIGMAS,
    Dispersion,
    HoltForecaster,
    RateForecaster,
    RecentRate,
    counting_noise,
)

SCRAPE = 30.0


def poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: exact while exp(-mean) is a normal double (means up to ~700).
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def readings(rng: random.Random, rate: float, n: int) -> list[float]:
    """`n` rates measured from Poisson counts over a scrape each."""
    return [poisson(rng, rate * SCRAPE) / SCRAPE for _ in range(n)]


def forecaster(jumps: bool = True, level_s: float = 900.0, band: float = 0.1) -> RateForecaster:
    return RateForecaster(
        HoltForecaster(level_s, level_s, 120.0), RecentRate(60.0) if jumps else None, band
    )


@pytest.mark.parametrize(("rate", "half_life"), [(5.0, 60.0), (5.0, 900.0), (20.0, 240.0)])
def test_counting_noise_is_the_spread_of_an_ewma_of_poisson_counts(
    rate: float, half_life: float
) -> None:
    rng = random.Random(11)
    ewma, values = RecentRate(half_life), []
    for k, r in enumerate(readings(rng, rate, 40_000)):
        ewma.update(k * SCRAPE, r)
        if k > 100 and ewma.value is not None:
            values.append(ewma.value)
    measured = statistics.pstdev(values) / rate
    # The formula counts arrivals continuously; 30 s scrapes are close to that when the
    # half-life spans several of them.
    assert measured == pytest.approx(counting_noise(rate, half_life), rel=0.15)


def fed(series: list[float], *forecasters: RateForecaster, start: int = 0) -> None:
    """Feed `series`, one reading a scrape from scrape `start`, to every forecaster."""
    for k, r in enumerate(series, start):
        for f in forecasters:
            f.update(k * SCRAPE, r)


def test_a_burst_past_the_headroom_moves_the_level_within_minutes() -> None:
    rng = random.Random(5)
    jumping, slow = forecaster(), forecaster(jumps=False)
    fed(readings(rng, 4.0, 120) + readings(rng, 8.0, 7), jumping, slow)
    # Three minutes into the burst: most of the way up, where a 900 s level alone is far below.
    assert (jumping.smoothed() or 0) > 7.0
    assert (slow.smoothed() or 0) < 5.0
    fed(readings(rng, 8.0, 13), jumping, start=127)
    assert jumping.forecast() == pytest.approx(8.0, rel=0.1)


def test_a_drop_past_the_headroom_moves_the_level_down_within_minutes() -> None:
    rng = random.Random(6)
    jumping, slow = forecaster(), forecaster(jumps=False)
    fed(readings(rng, 8.0, 120) + readings(rng, 2.0, 6), jumping, slow)
    # Three minutes after the drop: most of the way down, where the slow level has hardly
    # started (capacity for it would be held most of an hour).
    assert (jumping.smoothed() or 0) < 3.5
    assert (slow.smoothed() or 0) > 6.5


@pytest.mark.parametrize("seed", range(1, 5))
def test_steady_noisy_load_never_jumps(seed: int) -> None:
    # 4 h at 5 req/s: readings swing +-8% (one sd), the present rate +-3.5%; it never leaves
    # the 10% headroom around the level by 3 of its sds, so the level is exactly the one a
    # forecaster without jumps keeps, and far calmer than the readings.
    rng = random.Random(seed)
    series = readings(rng, 5.0, 480)
    jumping, slow = forecaster(), forecaster(jumps=False)
    levels = []
    for k, r in enumerate(series):
        jumping.update(k * SCRAPE, r)
        slow.update(k * SCRAPE, r)
        assert jumping.smoothed() == slow.smoothed()
        levels.append(jumping.smoothed() or 0.0)
    assert statistics.pstdev(series) > 4 * statistics.pstdev(levels[60:])


def test_the_present_rate_is_surely_outside_by_the_noise_of_the_edge_it_passes() -> None:
    recent = RecentRate(60.0)
    assert not recent.surely_outside(9.0, 11.0, JUMP_NOISE_SIGMAS)  # nothing read yet
    high_sd = 11.0 * counting_noise(11.0, 60.0)
    low_sd = 9.0 * counting_noise(9.0, 60.0)
    for value, outside in (
        (11.0 + 2.1 * high_sd, True),
        (11.0 + 1.9 * high_sd, False),
        (9.0 - 2.1 * low_sd, True),
        (9.0 - 1.9 * low_sd, False),
        (10.0, False),
    ):
        recent = RecentRate(60.0)
        recent.update(0.0, value)
        assert recent.surely_outside(9.0, 11.0, 2.0) == outside, value
    # Against a level of 0, any request at all is news.
    recent = RecentRate(60.0)
    recent.update(0.0, 0.05)
    assert recent.surely_outside(0.0, 0.0, JUMP_NOISE_SIGMAS)


def test_a_few_requests_a_scrape_seldom_jump_the_level_on_noise() -> None:
    # 0.2 req/s, 6 requests a scrape, 30 noise seeds of 8 h. The present rate's noise at its
    # own low values is small, so judged by it a run of low counts looked like a fall: the
    # level jumped on noise within 8 h on 13 of the 30 (and reversed a replica in the
    # controller's boundary test). Judged on the square root of counts, 4 of 30: an EWMA
    # weighing a scrape at 29% is lumpier than one Poisson count, so its tails are heavier.
    jumped = 0
    for seed in range(30):
        rng = random.Random(seed)
        jumping, slow = forecaster(), forecaster(jumps=False)
        for k, r in enumerate(readings(rng, 0.2, 960)):
            jumping.update(k * SCRAPE, r)
            slow.update(k * SCRAPE, r)
            if jumping.smoothed() != slow.smoothed():
                jumped += 1
                break
    assert jumped <= 5


@pytest.mark.parametrize(
    ("rate", "level_s", "trend_s"), [(5.0, 900.0, 900.0), (20.0, 900.0, 900.0), (2.0, 240.0, 480.0)]
)
def test_the_forecast_noise_is_the_spread_of_the_forecast_on_poisson_counts(
    rate: float, level_s: float, trend_s: float
) -> None:
    # The band's floor is a multiple of this figure: it must be the forecast's own spread,
    # slope and all, which is wider than a plain EWMA's (counting_noise) by about 1.4 here.
    rng = random.Random(11)
    holt, values = HoltForecaster(level_s, trend_s, 120.0), []
    for k, r in enumerate(readings(rng, rate, 40_000)):
        holt.update(k * SCRAPE, r)
        if k > 400:
            values.append(holt.forecast() or 0.0)
    measured = statistics.pstdev(values) / rate
    assert measured == pytest.approx(holt.noise(rate, SCRAPE), rel=0.15)
    assert holt.noise(rate, SCRAPE) > 1.2 * counting_noise(rate, level_s)
    assert math.isinf(holt.noise(0.0, SCRAPE))


@pytest.mark.parametrize("seed", range(1, 5))
def test_a_new_level_forgets_a_high_first_reading_within_minutes(seed: int) -> None:
    # A controller (re)started on a reading twice the true rate: the level is the mean of what
    # it has read so far, so ten minutes later it is within 10% of the rate. Weighing the
    # first reading as a settled 15-minute level would (2% per reading), it was still 60% high.
    rng = random.Random(seed)
    f = forecaster()
    fed([10.0, *readings(rng, 5.0, 20)], f)
    assert f.smoothed() == pytest.approx(5.0, rel=0.1)


@pytest.mark.parametrize("n", [1, 10, 30, 120])
def test_a_new_level_is_as_noisy_as_its_settling_says(n: int) -> None:
    # The level after n readings at 5 req/s, 400 seeds: its spread is at most the settled
    # forecast's noise times `settling` and not far under it (0.66-0.94 measured: while the
    # level learns no slope it has none of the slope's wander, which `noise` includes). One
    # reading has seen nothing yet; told the seconds it counted, it is one 30 s count.
    levels, h = [], HoltForecaster(900.0, 900.0, 120.0)
    for seed in range(400):
        h = HoltForecaster(900.0, 900.0, 120.0)
        for k, r in enumerate(readings(random.Random(seed), 5.0, n)):
            h.update(k * SCRAPE, r)
        levels.append(h.forecast() or 0.0)
    predicted = h.noise(5.0, SCRAPE) * h.settling(SCRAPE)
    assert 0.6 * predicted < statistics.pstdev(levels) / 5.0 < 1.05 * predicted
    assert h.settling(SCRAPE) > 1.0


def test_only_a_young_level_has_unsettled_noise() -> None:
    # The part of the noise a rise of the level is discounted by (stabilise.py): most at the
    # first reading, shrinking as readings come in, none once the level has settled (a
    # half-life of history) or at a level of 0, where there is nothing to discount.
    rng = random.Random(3)
    f = forecaster()
    assert f.unsettled_noise(SCRAPE) == 0.0  # nothing read yet
    seen = []
    for k, r in enumerate(readings(rng, 5.0, 40)):
        f.update(k * SCRAPE, r)
        seen.append(f.unsettled_noise(SCRAPE))
    assert seen[0] > 0.08  # one 30 s count at 5 req/s: 8% of Poisson noise, plus the margin
    # (Not strictly falling reading by reading: the young dispersion estimate moves too.)
    assert seen[0] > seen[10] > seen[20] > seen[28] > 0.0
    assert seen[29:] == [0.0] * 11  # a half-life (15 min, 30 readings) in: settled
    assert f.noise(SCRAPE) > 0.0  # the band's floor still has the settled noise
    idle = forecaster()
    for k in range(5):
        idle.update(k * SCRAPE, 0.0)
    assert idle.unsettled_noise(SCRAPE) == 0.0


def test_a_new_level_has_no_trend_from_its_first_readings() -> None:
    # Two readings are a mean, not a ramp: the forecast does not project their difference.
    f = forecaster()
    fed([10.0, 20.0], f)
    assert f.forecast() == pytest.approx(15.0, rel=0.02)


@pytest.mark.parametrize("rate", [0.45, 4.0, 20.0])
def test_steady_load_is_never_surely_falling(rate: float) -> None:
    # The controller drops the band's noise floor while the level is surely falling: on
    # steady load that must not happen, or a boundary would reverse. 4 seeds of 8 h.
    for seed in range(4):
        rng = random.Random(seed)
        f = forecaster()
        for k, r in enumerate(readings(rng, rate, 960)):
            f.update(k * SCRAPE, r)
            assert not (k > 60 and f.falling(SCRAPE, 3.0)), (seed, k)


@pytest.mark.parametrize("seed", range(4))
def test_a_steady_fall_is_surely_falling_within_the_hour(seed: int) -> None:
    # 20 req/s falling 10% an hour (the trace's evening): measured 14-37 minutes.
    rng = random.Random(seed)
    f = forecaster()
    for k in range(240):
        t = k * SCRAPE
        rate = 20.0 * (1.0 - 0.10 * max(0.0, t - 3600.0) / 3600.0)
        f.update(t, poisson(rng, rate * SCRAPE) / SCRAPE)
        assert t > 3600.0 or not f.falling(SCRAPE, 3.0)
    assert f.falling(SCRAPE, 3.0)


def overdispersed(rng: random.Random, rate: float, n: int, dispersion: float) -> list[float]:
    """`n` rates from counts `dispersion` times as variable as Poisson's (a Poisson count of a
    gamma-distributed mean: traffic that arrives in bunches, as batch clients send it)."""
    out = []
    for _ in range(n):
        mean = rng.gammavariate(rate * SCRAPE / (dispersion - 1.0), dispersion - 1.0)
        count = 0
        while mean > 0:  # in chunks: the sampler above is exact only up to a mean of ~700
            count += poisson(rng, min(mean, 300.0))
            mean -= 300.0
        out.append(count / SCRAPE)
    return out


@pytest.mark.parametrize(
    ("rate", "dispersion"),
    [(0.2, 1.0), (5.0, 1.0), (20.0, 1.0), (0.45, 3.0), (5.0, 3.0), (20.0, 2.0)],
)
def test_the_dispersion_of_steady_counts_is_measured(rate: float, dispersion: float) -> None:
    # 4 h of readings, 4 seeds: measured within 30% (an hour's weighted mean of squared
    # differences spreads by about 13% over seeds); Poisson counts are measured as Poisson,
    # from 6 requests a scrape to 600.
    for seed in range(4):
        rng = random.Random(seed)
        series = (
            readings(rng, rate, 480)
            if dispersion == 1.0
            else overdispersed(rng, rate, 480, dispersion)
        )
        f = forecaster()
        fed(series, f)
        assert f.dispersion.estimate == pytest.approx(dispersion, rel=0.3), seed


def test_a_step_in_demand_is_not_taken_for_burstiness() -> None:
    # Doubling the rate is one huge difference between two readings; weighed in full it would
    # have read as a dispersion of about 3 for the next hour and widened the band for nothing.
    for seed in range(4):
        rng = random.Random(seed)
        f = forecaster()
        fed(readings(rng, 20.0, 240), f)
        before = f.dispersion.index()
        fed(readings(rng, 40.0, 2), f, start=240)
        assert f.dispersion.index() < 1.1 * before, seed


def test_bunched_arrivals_widen_the_noise_and_the_jump_test() -> None:
    # 2 req/s in counts 3 times as variable as Poisson's, 8 h, 8 seeds. Judged as Poisson the
    # level jumped on noise on every seed; judged with the measured dispersion, on one.
    class Poisson(Dispersion):
        def index(self) -> float:
            return 1.0

    as_measured = as_poisson = 0
    for seed in range(8):
        rng = random.Random(seed)
        measuring, poisson_judged, slow = forecaster(), forecaster(), forecaster(jumps=False)
        poisson_judged.dispersion = Poisson()
        for k, r in enumerate(overdispersed(rng, 2.0, 960, 3.0)):
            fed([r], measuring, poisson_judged, slow, start=k)
        as_measured += measuring.smoothed() != slow.smoothed()
        as_poisson += poisson_judged.smoothed() != slow.smoothed()
    assert as_poisson == 8
    assert as_measured <= 1
    # The band's floor follows: the forecast's noise is sqrt(3) times the Poisson figure.
    assert measuring.noise(SCRAPE) == pytest.approx(
        math.sqrt(3.0) * poisson_judged.noise(SCRAPE), rel=0.15
    )


def test_a_burst_in_bunched_traffic_is_still_met_within_minutes() -> None:
    # The jump test is wider for bursty traffic, so a burst is surer later, not never: 4 ->
    # 8 req/s at 3 times Poisson's variance is most of the way up within 10 minutes.
    for seed in range(4):
        rng = random.Random(seed)
        f = forecaster()
        fed(overdispersed(rng, 4.0, 120, 3.0) + overdispersed(rng, 8.0, 20, 3.0), f)
        assert (f.smoothed() or 0) > 6.5, seed
