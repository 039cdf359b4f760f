"""Load shapes: bounded in time and users, and each with the form its name promises."""

from __future__ import annotations

import pytest

from gemma_fleet.loadtest.shapes import SHAPES, ShapeSpec, parse_duration


def _series(spec: ShapeSpec) -> list[int]:
    return [u for t in range(int(spec.duration_s)) if (u := spec.users_at(t)) is not None]


@pytest.mark.parametrize("kind", SHAPES)
def test_every_shape_ends_on_time_and_never_exceeds_its_users(kind: str) -> None:
    spec = ShapeSpec.model_validate({"kind": kind, "duration_s": 600, "users": 40})
    series = _series(spec)
    assert len(series) == 600
    assert all(1 <= u <= 40 for u in series)
    assert max(series) == 40
    assert spec.users_at(600) is None and spec.tick(600.5) is None


def test_step_climbs_in_equal_steps() -> None:
    spec = ShapeSpec(kind="step", duration_s=400, users=40, steps=4)
    assert [spec.users_at(t) for t in (0, 99, 100, 200, 399)] == [10, 10, 20, 30, 40]


def test_spike_jumps_at_once_and_falls_back() -> None:
    spec = ShapeSpec(kind="spike", duration_s=100, users=50, spike_at=0.4, spike_length=0.2)
    assert [spec.users_at(t) for t in (10, 39, 40, 59, 60, 99)] == [12, 12, 50, 50, 12, 12]
    tick = spec.tick(45)
    assert tick is not None and tick[1] >= 50  # all spike users start within a second


def test_diurnal_has_a_night_trough_and_an_afternoon_peak() -> None:
    spec = ShapeSpec(kind="diurnal", duration_s=240, users=100, base_fraction=0.05)
    night = spec.users_at(40)  # 04:00 of the compressed day
    afternoon = spec.users_at(130)  # 13:00
    assert night is not None and afternoon is not None
    assert night <= 15 and afternoon >= 95


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("10m", 600),
                                               ("1.5h", 5400), ("1d", 86400)])  # fmt: skip
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "0s", "-5m", "30d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_shapes_refuse_unbounded_settings() -> None:
    with pytest.raises(ValueError):
        ShapeSpec(kind="constant", duration_s=60, users=1_000_000)
    with pytest.raises(ValueError):
        ShapeSpec(kind="constant", duration_s=30 * 86400, users=10)
