"""VRAM profiles: weight, activation and KV-cache memory of Gemma 4 on a GPU, term by term."""

from gemma_fleet.vram.kv import BLOCK_SIZE, KvDtype, KvShape, kv_shape
from gemma_fleet.vram.profile import (
    DEFAULT_MAX_MODEL_LEN,
    GIB,
    ProfileError,
    RuntimeAssumptions,
    VramProfile,
    compute_profile,
    profile,
    tp_refusal,
    valid_tp_degrees,
)
from gemma_fleet.vram.record import ProfileRecord
from gemma_fleet.vram.weights import WeightTerm, decode_read_bytes, text_params, weight_terms

__all__ = [
    "BLOCK_SIZE",
    "DEFAULT_MAX_MODEL_LEN",
    "GIB",
    "KvDtype",
    "KvShape",
    "ProfileError",
    "ProfileRecord",
    "RuntimeAssumptions",
    "VramProfile",
    "WeightTerm",
    "compute_profile",
    "decode_read_bytes",
    "kv_shape",
    "profile",
    "text_params",
    "tp_refusal",
    "valid_tp_degrees",
    "weight_terms",
]
