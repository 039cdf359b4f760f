"""The demand the controller plans for (autoscaler/stabilise.py): up at once or after the up
window, down only after the whole down window agreed, to the highest forecast in it."""

from __future__ import annotations

import random

from gemma_fleet.autoscaler.stabilise import DemandStabiliser

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
