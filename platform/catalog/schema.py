"""Typed shape of the catalog data files (gemma4.yaml, gpus.yaml, quantization.yaml).

Every model here is strict about unknown keys so that a typo in a data file fails at load with
the field's path instead of being silently ignored.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

NonNegativeInt = Annotated[int, Field(ge=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Modality(StrEnum):
    TEXT = "text"
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class MoE(Strict):
    num_experts: PositiveInt
    top_k: PositiveInt
    moe_intermediate_size: PositiveInt
    layers: str = "all"

    @model_validator(mode="after")
    def _top_k_within_experts(self) -> MoE:
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k {self.top_k} exceeds num_experts {self.num_experts}")
        return self


class TextArch(Strict):
    """The decoder: what decides weight bytes, KV bytes and tensor-parallel limits."""

    num_hidden_layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    use_double_wide_mlp: bool
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    num_global_key_value_heads: PositiveInt
    head_dim: PositiveInt
    global_head_dim: PositiveInt
    sliding_window: PositiveInt
    pattern_period: PositiveInt
    num_kv_shared_layers: NonNegativeInt
    attention_k_eq_v: bool
    hidden_size_per_layer_input: NonNegativeInt
    moe: MoE | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TextArch:
        if self.num_kv_shared_layers >= self.num_hidden_layers:
            raise ValueError("num_kv_shared_layers must leave at least one layer owning its KV")
        if self.pattern_period > self.num_hidden_layers:
            raise ValueError("pattern_period exceeds num_hidden_layers: no full-attention layer")
        return self

    def is_full_attention(self, layer: int) -> bool:
        """Layer `layer` (0-based) is full attention every `pattern_period`-th layer."""
        return (layer + 1) % self.pattern_period == 0

    def is_kv_shared(self, layer: int) -> bool:
        """The last `num_kv_shared_layers` layers reuse earlier layers' KV and store none."""
        return layer >= self.num_hidden_layers - self.num_kv_shared_layers

    def mlp_intermediate(self, layer: int) -> int:
        if self.use_double_wide_mlp and self.is_kv_shared(layer):
            return 2 * self.intermediate_size
        return self.intermediate_size


class Encoder(Strict):
    layers: PositiveInt
    hidden_size: PositiveInt
    params: PositiveFloat
    intermediate_size: PositiveInt | None = None
    kind: str | None = None


class ParamCounts(Strict):
    """Published parameter counts: checks for the computed ones, never inputs."""

    effective: PositiveFloat | None = None
    with_embeddings: PositiveFloat | None = None
    total: PositiveFloat | None = None
    active: PositiveFloat | None = None


class ModelSpec(Strict):
    name: str
    hf_id: str
    target: str
    params: ParamCounts
    context_length: PositiveInt
    modalities: list[Modality]
    text: TextArch
    vision: Encoder | None = None
    audio: Encoder | None = None

    @model_validator(mode="after")
    def _encoders_match_modalities(self) -> ModelSpec:
        if (Modality.AUDIO in self.modalities) != (self.audio is not None):
            raise ValueError("audio modality and audio encoder must come together")
        if (Modality.IMAGE in self.modalities) != (self.vision is not None):
            raise ValueError("image modality and vision encoder must come together")
        return self


class AudioFacts(Strict):
    sample_rate_hz: PositiveInt
    ms_per_token: PositiveInt
    max_tokens: PositiveInt


class VideoFacts(Strict):
    frames_default: PositiveInt
    tokens_per_frame: PositiveInt


class Family(Strict):
    """Facts shared by every size."""

    model_config = ConfigDict(extra="allow", frozen=True)  # prose-like extras (templates, flags)

    vocab_size: PositiveInt
    tie_word_embeddings: bool
    final_logit_softcapping: PositiveFloat
    eos_token_ids: list[NonNegativeInt]
    vllm_min_version: str
    image_soft_tokens_choices: list[PositiveInt]
    image_soft_tokens_default: PositiveInt
    audio: AudioFacts
    video: VideoFacts


class PublishedSizes(Strict):
    google_load_memory_gib: dict[str, dict[str, PositiveFloat]]
    gguf_file_gb: dict[str, dict[str, PositiveFloat]]
    vllm_recipe_layouts: dict[str, str]


class BriefClaim(Strict):
    model: str
    quant: str
    gpu_memory_gb: PositiveFloat
    text: str


class GpuSpec(Strict):
    name: str
    memory_gb: PositiveFloat
    bandwidth_gbs: PositiveFloat
    bf16_tflops: PositiveFloat
    fp8_tflops: PositiveFloat | None = None
    interconnect: str

    @property
    def memory_bytes(self) -> int:
        """Marketed GB read as 10**9 bytes: at or below what the driver exposes on every part
        listed, so a "fits" verdict errs on the safe side."""
        return int(self.memory_gb * 1e9)


class QuantFormat(Strict):
    name: str
    bits_per_weight: PositiveFloat
    quantizes_embeddings: bool
    label: str

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8
