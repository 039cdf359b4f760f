"""Load and validate the catalog shipped inside the package (nothing outside the repo is read)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from gemma_fleet.catalog.schema import (
    BriefClaim,
    Family,
    GpuSpec,
    ModelSpec,
    PublishedSizes,
    QuantFormat,
)
from gemma_fleet.config_file import read_yaml


class CatalogError(ValueError):
    """A catalog data file is missing, malformed, or fails validation; the message names the
    file and the field."""


class Catalog(BaseModel):
    model_config = ConfigDict(frozen=True)

    family: Family
    models: dict[str, ModelSpec]
    gpus: dict[str, GpuSpec]
    quants: dict[str, QuantFormat]
    published: PublishedSizes
    known_issues: list[str]
    claims: list[BriefClaim]

    def model(self, name: str) -> ModelSpec:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(_unknown("model", name, self.models)) from None

    def gpu(self, name: str) -> GpuSpec:
        try:
            return self.gpus[name]
        except KeyError:
            raise KeyError(_unknown("GPU", name, self.gpus)) from None

    def quant(self, name: str) -> QuantFormat:
        try:
            return self.quants[name]
        except KeyError:
            raise KeyError(_unknown("quantization", name, self.quants)) from None


def _unknown(kind: str, name: str, known: dict[str, Any]) -> str:
    return f"unknown {kind} {name!r}; known: {', '.join(known)}"


def _field_path(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"


def load_catalog_from(directory: Path) -> Catalog:
    """Load gemma4.yaml, gpus.yaml and quantization.yaml from `directory`."""
    gemma = read_yaml(directory / "gemma4.yaml", CatalogError, "catalog file")
    gpus = read_yaml(directory / "gpus.yaml", CatalogError, "catalog file")
    quants = read_yaml(directory / "quantization.yaml", CatalogError, "catalog file")
    try:
        return Catalog(
            family=gemma.get("family"),
            models={
                name: {"name": name, **spec} for name, spec in (gemma.get("models") or {}).items()
            },
            gpus={name: {"name": name, **spec} for name, spec in (gpus.get("gpus") or {}).items()},
            quants={
                name: {"name": name, **spec} for name, spec in (quants.get("formats") or {}).items()
            },
            published=gemma.get("published_sizes"),
            known_issues=gemma.get("known_issues") or [],
            claims=gemma.get("brief_claims") or [],
        )
    except ValidationError as exc:
        raise CatalogError(f"catalog in {directory}: {_field_path(exc)}") from exc


@cache
def load_catalog() -> Catalog:
    """The catalog shipped with the package (parsed once per process)."""
    directory = Path(str(resources.files("gemma_fleet.catalog") / "data"))
    return load_catalog_from(directory)
