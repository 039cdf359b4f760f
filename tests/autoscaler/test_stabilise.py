"""The demand the controller plans for (autoscaler/stabilise.py): up at once or after the up
window, down only after the whole down window agreed, to the highest forecast in it."""

from __future__ import annotations

import random

import pytest

from gemma_fleet.autoscaler.stabilise import (
    BAND_NOISE_SIGMAS,
    MIN_BAND,
    MIN_SPREAD_SAMPLES,
    DemandStabiliser,
    relative_spread,
)

M = "gemma-4-E2B"


def feed(stab: DemandStabiliser, series: list[float], step: float = 30.0) -> list[float]:
    return [stab.planned(M, k * step, f) for k, f in enumerate(series)]


def test_a_rise_is_planned_at_once_without_an_up_delay() -> None:
    assert feed(DemandStabiliser(0, 300), [1.0, 1.0, 5.0]) == [1.0, 1.0, 5.0]


def test_a_rise_waits_for_the_up_window_and_takes_its_lowest_forecast() -> None:
    planned = feed(DemandStabiliser(60, 300), [1.0, 4.0, 6.0, 5.0, 7.0])
    # The window is inclusive: at 60 s it still holds the 1.0 of 0 s. At 90 s every forecast
    # of the last 60 s (4, 6, 5) is above 1 -> the lowest, 4; at 120 s (6, 5, 7) -> 5.
    assert planned == [1.0, 1.0, 1.0, 4.0, 5.0]


def test_a_fall_waits_for_the_down_window_then_takes_its_highest_forecast() -> None:
    series = [8.0] * 3 + [2.0] * 12
    planned = feed(DemandStabiliser(0, 300), series)
    # The last 8.0 is at 60 s; it leaves the 300 s window at 390 s (step 13).
    assert planned[:13] == [8.0] * 13
    assert planned[13:] == [2.0, 2.0]


def test_a_lone_spike_is_planned_for_a_whole_window_then_given_back() -> None:
    series = [2.0] * 5 + [9.0] + [2.0] * 15
    planned = feed(DemandStabiliser(0, 300), series)
    spike = 5 * 30.0
    for k, p in enumerate(planned):
        t = k * 30.0
        assert p == (9.0 if spike <= t <= spike + 300 else 2.0), t


def test_noise_never_lowers_the_plan_before_a_window_of_lower_forecasts() -> None:
    rng = random.Random(5)
    series = [5.0 * rng.lognormvariate(0, 0.1) for _ in range(400)]
    planned = feed(DemandStabiliser(0, 300), series)
    for k in range(1, len(planned)):
        if planned[k] < planned[k - 1]:
            window = series[max(0, k - 10) : k + 1]
            assert planned[k] == max(window)  # the highest of the last 300 s
            assert all(f < planned[k - 1] for f in window)
    # And it stays near the top of the noise, never below the forecast it was given.
    assert all(p >= f for p, f in zip(planned, series, strict=True))


def test_a_young_levels_rise_counts_only_past_its_unsettled_noise() -> None:
    # A (re)started controller's first readings are noisy beyond what the band and the
    # headroom are sized for: planning on them at once bought a replica on a high first
    # reading and gave it back an hour later. So its rises are discounted by the noise only a
    # young level has: the first forecast is planned 20% low here, and a later one passes
    # only once it beats the plan after the (smaller) discount.
    stab = DemandStabiliser(0, 300)
    assert stab.planned(M, 0.0, 10.0, unsettled=0.2) == pytest.approx(8.0)
    assert stab.planned(M, 30.0, 9.5, unsettled=0.2) == pytest.approx(8.0)  # 7.6 < 8
    assert stab.planned(M, 60.0, 9.5, unsettled=0.1) == pytest.approx(8.55)
    assert stab.planned(M, 90.0, 9.5, unsettled=0.0) == pytest.approx(9.5)  # settled


def test_the_unsettled_discount_does_not_touch_a_fall() -> None:
    # A fall still waits for the down window and lands on its highest forecast (plus the
    # band): the discount only ever holds a rise back.
    series = [8.0] * 3 + [2.0] * 12
    plain = feed(DemandStabiliser(0, 300), series)
    stab = DemandStabiliser(0, 300)
    young = [
        stab.planned(M, k * 30.0, f, unsettled=0.0 if k < 3 else 0.3) for k, f in enumerate(series)
    ]
    assert young == plain
    assert young[-1] == 2.0


def test_models_are_stabilised_apart() -> None:
    stab = DemandStabiliser(0, 300)
    stab.planned("a", 0.0, 10.0)
    stab.planned("b", 0.0, 1.0)
    assert stab.planned("a", 30.0, 1.0) == 10.0
    assert stab.planned("b", 30.0, 3.0) == 3.0


def test_a_fall_lands_the_band_above_the_windows_highest_forecast() -> None:
    series = [8.0] * 3 + [2.0] * 12
    planned = feed(DemandStabiliser(0, 300, scale_down_band=0.25), series)
    assert planned[:13] == [8.0] * 13
    assert planned[13:] == [2.5, 2.5]


def test_a_window_inside_the_band_does_not_lower_the_plan() -> None:
    # 4.0 * 1.25 = 5.0 is not below the planned 5.0: the plan holds however long it lasts.
    planned = feed(DemandStabiliser(0, 300, scale_down_band=0.25), [5.0] + [4.0] * 30)
    assert set(planned) == {5.0}


def test_the_band_never_delays_a_rise() -> None:
    # After falling to 2.5 (2.0 plus the band), a forecast of 2.6 is planned at once.
    series = [8.0] * 3 + [2.0] * 11 + [2.6]
    planned = feed(DemandStabiliser(0, 300, scale_down_band=0.25), series)
    assert planned[-2:] == [2.5, 2.6]


def spread_fed(sigma: float, seed: int = 3, n: int = 80) -> DemandStabiliser:
    """A stabiliser measuring its band (4 spreads, capped at 10%) fed `n` forecasts around 50
    with relative log-normal noise `sigma`."""
    rng = random.Random(seed)
    stab = DemandStabiliser(0, 300, scale_down_band=0.10, band_spreads=4.0)
    feed(stab, [50.0 * rng.lognormvariate(0, sigma) for _ in range(n)])
    return stab


def test_the_band_follows_the_measured_noise_between_the_floor_and_the_cap() -> None:
    bands = {sigma: spread_fed(sigma).band(M) for sigma in (0.0, 0.005, 0.01, 0.02, 0.1)}
    assert bands[0.0] == MIN_BAND  # no noise: the floor, not the 10% a fixed band holds
    assert bands[0.1] == 0.10  # 4 x 10% noise is past the cap
    # In between, about 4 times the noise, growing with it.
    for sigma in (0.005, 0.01, 0.02):
        assert 3.0 * sigma < bands[sigma] < 5.0 * sigma, (sigma, bands[sigma])
    assert bands[0.005] < bands[0.01] < bands[0.02]


def test_the_band_is_the_cap_until_there_is_enough_to_measure() -> None:
    stab = spread_fed(0.0, n=MIN_SPREAD_SAMPLES - 1)
    assert stab.band(M) == 0.10
    stab.planned(M, 30.0 * MIN_SPREAD_SAMPLES, 50.0)
    assert stab.band(M) == MIN_BAND


def test_the_band_covers_the_forecast_levels_own_counting_noise() -> None:
    # Smooth forecasts measure next to no spread, but a level estimated from few requests
    # wanders over hours by more than that: the band is at least BAND_NOISE_SIGMAS of the
    # noise the caller says the level has. The cap bounds the measured spread, not this:
    # a forecast of a few requests a minute wanders by more than the cap, and capping its
    # floor brought reversals back (autoscaler/stabilise.py).
    stab = spread_fed(0.0)
    assert stab.band(M) == MIN_BAND
    assert stab.band(M, noise=0.006) == pytest.approx(BAND_NOISE_SIGMAS * 0.006)
    assert stab.band(M, noise=0.05) == pytest.approx(BAND_NOISE_SIGMAS * 0.05)
    assert spread_fed(0.1).band(M, noise=0.006) == 0.10  # a wide spread is still capped
    # On a straight fall (no spread at all) each step lands that band above the window's
    # highest forecast.
    series = [100.0 - 0.05 * k for k in range(400)]
    fall = DemandStabiliser(0, 300, scale_down_band=0.10, band_spreads=4.0)
    planned = [fall.planned(M, 30.0 * k, f, noise=0.006) for k, f in enumerate(series)]
    assert planned[-1] == pytest.approx(series[-11] * (1 + BAND_NOISE_SIGMAS * 0.006))


def test_a_steady_trend_is_not_noise() -> None:
    # A straight fall has no spread around its own line: the band stays at the floor, and the
    # plan lands 1% above the window's highest forecast (a fixed 10% band: 10% above).
    series = [100.0 - 0.05 * k for k in range(400)]
    measured = feed(DemandStabiliser(0, 300, scale_down_band=0.10, band_spreads=4.0), series)
    fixed = feed(DemandStabiliser(0, 300, scale_down_band=0.10), series)
    window_high = series[-11]  # the highest forecast of the last 300 s
    assert measured[-1] == pytest.approx(window_high * (1 + MIN_BAND))
    assert fixed[-1] == pytest.approx(window_high * 1.10)


def test_relative_spread_is_the_scatter_around_the_line() -> None:
    line = [(30.0 * k, 10.0 + 0.1 * k) for k in range(20)]
    assert relative_spread(line) == pytest.approx(0.0, abs=1e-12)
    zigzag = [(t, v + (0.5 if k % 2 else -0.5)) for k, (t, v) in enumerate(line)]
    spread = relative_spread(zigzag)
    assert spread is not None and 0.5 / 11.0 < spread < 0.6 / 10.0
    assert relative_spread(line[: MIN_SPREAD_SAMPLES - 1]) is None
    assert relative_spread([(30.0 * k, 0.0) for k in range(10)]) is None
