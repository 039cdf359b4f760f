"""Typed shape of the planner's input files: a demand file (one moment) and a trace (by hour).

Demand file:

    slo: {ttft_p95_s: 2.0, tpot_p95_s: 0.1}     # default for every model
    headroom: 1.2                              # plan capacity for demand x headroom
    on_demand_fraction: 0.0                    # share of each need kept off spot node pools
    models:
      gemma-4-31B: {requests_per_s: 4.0, mean_prompt_tokens: 1000, mean_output_tokens: 250}
      gemma-4-E4B:
        requests_per_s: 20
        mean_prompt_tokens: 500
        mean_output_tokens: 200
        slo: {ttft_p95_s: 1.0, tpot_p95_s: 0.05}   # optional, this model only

Trace: the same header, a token mix per model, and a request rate per model for each hour:

    models:
      gemma-4-31B: {mean_prompt_tokens: 1000, mean_output_tokens: 250}
    hours:
      - {hour: 0, requests_per_s: {gemma-4-31B: 1.5}}
      - {hour: 1, requests_per_s: {gemma-4-31B: 2.0}}

A model's mix is fixed across a trace (capacity is computed once per pool); a rate left out of an
hour is 0 for that hour.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gemma_fleet.autoscaler.plan import ModelDemand, Slo
from gemma_fleet.config_file import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloSpec(_Strict):
    ttft_p95_s: float = Field(2.0, gt=0, description="p95 time to first token, seconds")
    tpot_p95_s: float = Field(0.1, gt=0, description="p95 time per output token, seconds")

    def to_slo(self) -> Slo:
        return Slo(ttft_p95_s=self.ttft_p95_s, tpot_p95_s=self.tpot_p95_s)


# Upper bounds far past any fleet, so that a slip of the exponent (1e30) is named as such
# rather than planned for and printed in full.
Tokens = Annotated[float, Field(gt=0, le=10_000_000, description="mean tokens per request")]
Rate = Annotated[float, Field(ge=0, le=1_000_000, description="requests per second")]


class ModelLoad(_Strict):
    """Demand on one catalog model."""

    requests_per_s: Rate
    mean_prompt_tokens: Tokens
    mean_output_tokens: Tokens
    slo: SloSpec | None = None

    def to_demand(self) -> ModelDemand:
        return ModelDemand(self.requests_per_s, self.mean_prompt_tokens, self.mean_output_tokens)


class _Header(_Strict):
    slo: SloSpec = SloSpec()
    headroom: float = Field(1.2, ge=1.0, description="capacity planned per unit of demand")
    on_demand_fraction: float = Field(0.0, ge=0.0, le=1.0)


class DemandFile(_Header):
    models: dict[str, ModelLoad] = Field(min_length=1)

    def demand(self) -> dict[str, ModelDemand]:
        return {name: load.to_demand() for name, load in self.models.items()}

    def slos(self) -> dict[str, Slo]:
        return {name: (load.slo or self.slo).to_slo() for name, load in self.models.items()}


class TraceMix(_Strict):
    mean_prompt_tokens: Tokens
    mean_output_tokens: Tokens
    slo: SloSpec | None = None


class TraceHour(_Strict):
    hour: int = Field(ge=0)
    requests_per_s: dict[str, Rate]


class TraceFile(_Header):
    models: dict[str, TraceMix] = Field(min_length=1)
    hours: list[TraceHour] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_models(self) -> TraceFile:
        for step in self.hours:
            unknown = sorted(set(step.requests_per_s) - set(self.models))
            if unknown:
                raise ValueError(
                    f"hour {step.hour}: rate for {', '.join(unknown)}, which the trace's models "
                    "section does not list"
                )
        return self

    def demand_at(self, step: TraceHour) -> dict[str, ModelDemand]:
        return {
            name: ModelDemand(
                step.requests_per_s.get(name, 0.0), mix.mean_prompt_tokens, mix.mean_output_tokens
            )
            for name, mix in self.models.items()
        }

    def slos(self) -> dict[str, Slo]:
        return {name: (mix.slo or self.slo).to_slo() for name, mix in self.models.items()}


class InputFileError(ValueError):
    """A demand or trace file cannot be used; the message names the file and the field."""


def load_demand(path: Path | str) -> DemandFile:
    """Read and validate a demand file."""
    return load_model(path, DemandFile, InputFileError, "demand file")


def load_trace(path: Path | str) -> TraceFile:
    """Read and validate a trace file."""
    return load_model(path, TraceFile, InputFileError, "trace file")
