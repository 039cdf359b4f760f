"""Gemma 4 sizes, GPUs and weight formats: the facts every other part decides from."""

from gemma_fleet.catalog.load import Catalog, CatalogError, load_catalog, load_catalog_from
from gemma_fleet.catalog.schema import GpuSpec, Modality, ModelSpec, QuantFormat, TextArch

__all__ = [
    "Catalog",
    "CatalogError",
    "GpuSpec",
    "Modality",
    "ModelSpec",
    "QuantFormat",
    "TextArch",
    "load_catalog",
    "load_catalog_from",
]
