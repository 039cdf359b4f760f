"""The JSON shape of a VRAM profile, as printed by `gemma-fleet profile --json`."""

from __future__ import annotations

from pydantic import BaseModel

from gemma_fleet.vram.profile import VramProfile


class ProfileRecord(BaseModel):
    model: str
    gpu: str
    quant: str
    tp: int
    max_model_len: int
    kv_dtype: str
    text_only: bool
    gpu_memory_utilization: float
    fits: bool
    reason: str
    weight_bytes: int
    weight_bytes_per_gpu: int
    weights: dict[str, int]
    activation_bytes_per_gpu: int
    cuda_graph_bytes_per_gpu: int
    runtime_bytes_per_gpu: int
    budget_bytes_per_gpu: int
    kv_free_bytes_per_gpu: int
    kv_bytes_per_token: int
    kv_sliding_bytes_per_token: int
    kv_bytes_per_sequence: int
    kv_capacity_tokens: int
    max_concurrent_sequences: int
    min_gpu_memory_bytes: int
    warnings: list[str]

    @classmethod
    def of(cls, p: VramProfile) -> ProfileRecord:
        return cls(
            model=p.model,
            gpu=p.gpu,
            quant=p.quant,
            tp=p.tp,
            max_model_len=p.max_model_len,
            kv_dtype=p.kv_dtype.value,
            text_only=p.text_only,
            gpu_memory_utilization=p.runtime.gpu_memory_utilization,
            fits=p.fits,
            reason=p.reason,
            weight_bytes=p.weight_bytes,
            weight_bytes_per_gpu=p.weight_bytes_per_gpu,
            weights={t.name: t.bytes for t in p.weights},
            activation_bytes_per_gpu=p.activation_bytes_per_gpu,
            cuda_graph_bytes_per_gpu=p.cuda_graph_bytes_per_gpu,
            runtime_bytes_per_gpu=p.runtime_bytes_per_gpu,
            budget_bytes_per_gpu=p.budget_bytes_per_gpu,
            kv_free_bytes_per_gpu=p.kv_free_bytes_per_gpu,
            kv_bytes_per_token=p.kv_bytes_per_token,
            kv_sliding_bytes_per_token=p.kv.sliding_bytes_per_token,
            kv_bytes_per_sequence=p.kv_bytes_per_sequence,
            kv_capacity_tokens=p.kv_capacity_tokens,
            max_concurrent_sequences=p.max_concurrent_sequences,
            min_gpu_memory_bytes=p.min_gpu_memory_bytes,
            warnings=p.warnings,
        )
