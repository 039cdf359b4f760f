"""The vLLM engine settings of one model pool, as `engine_kwargs` for `ray.serve.llm.LLMConfig`.

A pool is one Gemma 4 size served at one configuration (context length, quantization, TP
degree, modalities). `VllmEngineSpec` states that configuration explicitly and
`VllmEngineSpec.engine_kwargs()` turns it into vLLM's engine arguments, adding what every Gemma 4
pool needs from the catalog's `family.vllm_flags` (the `gemma4` tool-call and reasoning parsers,
automatic tool choice). Nothing here imports vLLM or Ray: the fleet builder and the CLI can
compute settings on machines without either.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from gemma_fleet.catalog import Modality, load_catalog

# Catalog weight format -> vLLM `quantization`. None: the checkpoint's own dtype (bf16), or
# whatever quantization config the checkpoint carries. "fp8" quantizes bf16 weights to FP8 W8A8
# at load, or reads an FP8 checkpoint. The GGUF formats need the model path to name a .gguf
# file; Gemma 4 GGUF loading in vLLM has not been exercised by this project.
VLLM_QUANTIZATION: dict[str, str | None] = {
    "bf16": None,
    "fp8": "fp8",
    "int8": "gguf",
    "q5_k_m": "gguf",
    "q4_k_m": "gguf",
    "q4_0": "gguf",
}
# KV cache dtype as the VRAM model names it -> vLLM `kv_cache_dtype` ("auto" = model dtype).
VLLM_KV_CACHE_DTYPE: dict[str, str] = {"bf16": "auto", "fp8": "fp8"}
# The engine arguments taken from family.vllm_flags; the other keys there are examples/prose.
FAMILY_ENGINE_FLAGS = ("tool_call_parser", "reasoning_parser", "enable_auto_tool_choice")

Dtype = Literal["bfloat16", "float32", "float16", "auto"]


class VllmSettingsError(ValueError):
    """A pool's engine settings are inconsistent; the message says which fields and why.

    Raised inside `VllmEngineSpec`'s validation, so callers constructing a spec see it wrapped
    in pydantic's `ValidationError` with the same message."""


class VllmEngineSpec(BaseModel):
    """Everything that decides how vLLM runs one pool's replicas."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_source: str = Field(description="local checkpoint directory or Hugging Face repo id")
    served_model_name: str = Field(description="the name clients put in `model`")
    max_model_len: PositiveInt
    tensor_parallel_size: PositiveInt = 1
    quantization: str = Field("bf16", description="catalog weight format: bf16, fp8, int8, ...")
    kv_cache_dtype: str = Field("bf16", description="bf16 or fp8")
    text_only: bool = Field(False, description="skip the vision/audio towers entirely")
    modalities: dict[Modality, PositiveInt] | None = Field(
        None,
        description="most items per prompt for each non-text modality served; others get 0",
    )
    image_soft_tokens: PositiveInt | None = Field(
        None, description="soft tokens per image (Gemma 4: 70, 140, 280, 560 or 1120)"
    )
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: PositiveInt = 64
    max_num_batched_tokens: PositiveInt | None = None
    dtype: Dtype = "bfloat16"
    cpu_host: bool = Field(False, description="vLLM's CPU build (tests, laptops), not a GPU")
    cpu_kv_cache_gib: PositiveInt = Field(1, description="KV cache of the CPU build, in GiB")
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self) -> VllmEngineSpec:
        catalog = load_catalog()
        if self.quantization not in VLLM_QUANTIZATION:
            raise VllmSettingsError(
                f"quantization {self.quantization!r} unknown; known: {', '.join(VLLM_QUANTIZATION)}"
            )
        if self.kv_cache_dtype not in VLLM_KV_CACHE_DTYPE:
            raise VllmSettingsError(
                f"kv_cache_dtype {self.kv_cache_dtype!r} unknown; known: bf16, fp8"
            )
        if VLLM_QUANTIZATION[self.quantization] == "gguf" and not self.model_source.endswith(
            ".gguf"
        ):
            raise VllmSettingsError(
                f"quantization {self.quantization} is a GGUF format: model_source must name a "
                f".gguf file, got {self.model_source!r}"
            )
        if self.text_only and self.modalities:
            raise VllmSettingsError("text_only pools serve no modalities; drop one of the two")
        if self.modalities and Modality.TEXT in self.modalities:
            raise VllmSettingsError("modalities lists media only; text is always served")
        choices = catalog.family.image_soft_tokens_choices
        if self.image_soft_tokens is not None and self.image_soft_tokens not in choices:
            raise VllmSettingsError(
                f"image_soft_tokens {self.image_soft_tokens} is not one of Gemma 4's {choices}"
            )
        if self.cpu_host and self.tensor_parallel_size != 1:
            raise VllmSettingsError("the CPU build is run with tensor_parallel_size 1 here")
        return self

    def engine_kwargs(self) -> dict[str, Any]:
        """vLLM engine arguments for `LLMConfig.engine_kwargs`.

        `model` and `served_model_name` are left out: Ray Serve LLM refuses them there and takes
        them from `model_loading_config` (see `build_llm_config`).
        """
        kwargs: dict[str, Any] = {
            "max_model_len": self.max_model_len,
            "tensor_parallel_size": self.tensor_parallel_size,
            "dtype": self.dtype,
            "kv_cache_dtype": VLLM_KV_CACHE_DTYPE[self.kv_cache_dtype],
            "max_num_seqs": self.max_num_seqs,
            "seed": self.seed,
            **family_engine_flags(),
        }
        quantization = VLLM_QUANTIZATION[self.quantization]
        if quantization is not None:
            kwargs["quantization"] = quantization
        if self.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = self.max_num_batched_tokens
        if self.text_only:
            kwargs["language_model_only"] = True
        elif self.modalities is not None:
            # Every media kind gets an explicit limit: 0 stops vLLM from reserving encoder
            # memory and profiling for inputs this pool never accepts.
            kwargs["limit_mm_per_prompt"] = {
                kind.value: self.modalities.get(kind, 0)
                for kind in (Modality.IMAGE, Modality.AUDIO, Modality.VIDEO)
            }
        if self.image_soft_tokens is not None:
            kwargs["mm_processor_kwargs"] = {"max_soft_tokens": self.image_soft_tokens}
        if self.cpu_host:
            # torch.compile adds ~45 s to a CPU engine's start and buys little on toy models;
            # the CPU build sizes its KV cache from VLLM_CPU_KVCACHE_SPACE, not GPU memory.
            kwargs["enforce_eager"] = True
        else:
            kwargs["gpu_memory_utilization"] = self.gpu_memory_utilization
        return kwargs

    def env_vars(self) -> dict[str, str]:
        """Environment the engine process needs beyond the engine arguments."""
        if self.cpu_host:
            return {"VLLM_CPU_KVCACHE_SPACE": str(self.cpu_kv_cache_gib)}
        return {}


def family_engine_flags() -> dict[str, Any]:
    """Gemma 4's serving flags from the catalog (tool-call parser, reasoning parser, ...)."""
    extra = load_catalog().family.model_extra or {}
    flags = extra.get("vllm_flags") or {}
    missing = [name for name in FAMILY_ENGINE_FLAGS if name not in flags]
    if missing:
        raise VllmSettingsError(f"catalog family.vllm_flags lacks {', '.join(missing)}")
    return {name: flags[name] for name in FAMILY_ENGINE_FLAGS}
