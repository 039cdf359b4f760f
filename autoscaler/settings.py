"""The controller's knobs, as one typed model with defaults, loadable from a YAML file.

Every duration is in seconds. The defaults aim at GPU fleets, where a replica takes minutes to
load weights and costs dollars per hour: react to growth within about one interval, give
capacity back only after demand has stayed low for several minutes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gemma_fleet.autoscaler.demand_file import SloSpec
from gemma_fleet.autoscaler.plan import Slo
from gemma_fleet.config_file import load_model


class SmoothingSettings(BaseModel):
    """Demand smoothing and forecast (autoscaler/forecast.py): Holt's linear method with
    time-based half-lives, so irregular scrape intervals weigh samples correctly, beside a
    fast estimate of the present rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    level_half_life_s: float = Field(
        900.0,
        gt=0,
        description="a sample's weight in the level halves after this long: the level is the "
        "demand the headroom is kept over, slow so that counting noise and minute-to-minute "
        "swings stay inside the headroom instead of each high reading buying a replica; the "
        "trend follows the day's ramps and present_half_life_s meets bursts",
    )
    present_half_life_s: float | None = Field(
        60.0,
        gt=0,
        description="half-life of the estimate of the rate arriving now: once it is surely "
        "outside the headroom around the level (by 3 standard deviations of its counting "
        "noise), the level jumps to it, so a burst is met and a drop given back within minutes "
        "however slow the level; null: the level never jumps",
    )
    trend_half_life_s: float = Field(
        900.0,
        gt=0,
        description="a slope estimate's weight halves after this long: not shorter than "
        "level_half_life_s, or Holt's method overshoots and the level swings; long enough "
        "that the slope follows the day's ramps, not the noise of 30 s request counts, which "
        "the horizon would multiply",
    )
    horizon_s: float = Field(
        120.0,
        ge=0,
        description="how far ahead to forecast: about the time a new replica needs to serve",
    )


class ControllerSettings(BaseModel):
    """How often the controller reconciles and how cautiously it changes the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_s: float = Field(30.0, gt=0, description="seconds between reconcile steps")
    scale_up_delay_s: float = Field(
        0.0,
        ge=0,
        description="a model's forecast must stay above the planned rate this long before "
        "the plan grows (the lowest forecast over the window is planned; autoscaler/stabilise.py)",
    )
    scale_down_delay_s: float = Field(
        300.0,
        ge=0,
        description="a model's forecast must stay below the planned rate this long before the "
        "plan shrinks (the highest forecast over the window is planned); also how long a pool "
        "is watched before its first scale-down, and how long, after it bought back a replica "
        "within replica_start_s of giving one back, the plan must want fewer of its replicas "
        "without a break before it scales down (autoscaler/hysteresis.py)",
    )
    scale_down_band: float = Field(
        0.10,
        ge=0,
        le=1,
        description="a fall in the plan lands this fraction above the down window's highest "
        "forecast, and passes only when that is below the planned rate, so the next noisy "
        "reading does not raise the plan straight back; with scale_down_band_spreads, the most "
        "the measured spread may make the band (the floor from counting noise may exceed it)",
    )
    scale_down_band_spreads: float | None = Field(
        5.0,
        ge=0,
        description="the band is this many times the relative spread of a model's forecasts "
        "around their trend over the last 30 minutes, at most scale_down_band, so smooth "
        "demand is not held a fixed band above its forecast all the way down; never below 1% "
        "nor, unless demand is surely falling, 5 standard deviations of the forecast's counting "
        "noise, widened for traffic burstier than Poisson (autoscaler/stabilise.py); "
        "null: always scale_down_band",
    )
    min_replica_lifetime_s: float = Field(
        300.0, ge=0, description="no scale-down of a pool within this long of its last scale-up"
    )
    max_changes_per_step: int = Field(
        4, ge=1, description="replicas added plus removed across the fleet in one step"
    )
    max_scale_down_per_step: int = Field(
        1, ge=1, description="replicas one pool may lose in one step"
    )
    headroom: float = Field(
        0.1,
        ge=0,
        le=2,
        description="plan for this fraction more requests per second than forecast",
    )
    drain_fill: float = Field(
        1.0,
        gt=0,
        le=1,
        description="scale a pool down only while its running requests fit on the remaining "
        "replicas at this fraction of their max_num_seqs",
    )
    replica_start_s: float = Field(
        120.0,
        ge=0,
        description="how long a new replica takes to load and serve: a pool the plan empties "
        "may go while it still serves only once another pool of its model has had replicas "
        "this long (and, where the actuator reports it, has all of them serving); a re-layout "
        "that only saves money waits until the running layout has cost what its replicas "
        "cost while they load this long (autoscaler/incumbent.py). Include the time a new GPU "
        "node takes to join",
    )
    incumbent_tolerance: float | None = Field(
        0.02,
        ge=0,
        description="keep the running layout while it meets demand at most this fraction above "
        "the optimum's cost (autoscaler/incumbent.py); null: always apply the optimum. Higher "
        "moves fewer replicas and pays for it: on the 24 h trace 0.05 cost 0.7-1.2% more per "
        "day with a fifth fewer replica actions, 0.10 4% more (benchmarks/autoscaler_trace/)",
    )
    assumed_prompt_tokens: float = Field(
        1000.0, gt=0, description="mean prompt length when no engine metrics say otherwise"
    )
    assumed_output_tokens: float = Field(
        250.0, gt=0, description="mean output length when no engine metrics say otherwise"
    )
    smoothing: SmoothingSettings = SmoothingSettings()
    slo: SloSpec = Field(
        SloSpec(),
        description="latency every replica must hold at the load the plan gives it (p95 time "
        "to first token and per output token): a pool's capacity is the rate one replica "
        "sustains within it, so a tighter SLO plans more replicas",
    )
    model_slos: dict[str, SloSpec] = Field(
        {}, description="per catalog model (e.g. gemma-4-E4B), in place of `slo`"
    )

    def slo_for(self, model: str) -> Slo:
        """The SLO `model`'s pools are planned for."""
        return self.model_slos.get(model, self.slo).to_slo()

    @model_validator(mode="after")
    def _scale_down_fits_step(self) -> ControllerSettings:
        if self.max_scale_down_per_step > self.max_changes_per_step:
            raise ValueError(
                f"max_scale_down_per_step {self.max_scale_down_per_step} exceeds "
                f"max_changes_per_step {self.max_changes_per_step}"
            )
        return self


class SettingsError(ValueError):
    """A settings file could not be read or does not match ControllerSettings."""


def load_settings(path: Path) -> ControllerSettings:
    """Read `path` (YAML mapping) into ControllerSettings; SettingsError names the problem."""
    return load_model(path, ControllerSettings, SettingsError, "settings file")
