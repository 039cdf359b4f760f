"""Weight memory of a Gemma 4 size, counted from its architecture one component at a time.

Parameter counts are derived from the layer shapes (not copied from the model card); the
published counts are only used by tests as a check. Each term says whether tensor parallelism
splits it across ranks (vLLM's column/row-parallel linears and VocabParallelEmbedding) or
replicates it (norms, and the encoders, which we keep whole on every rank as a conservative
choice: vLLM may shard them).
"""

from __future__ import annotations

from dataclasses import dataclass

from gemma_fleet.catalog import ModelSpec, QuantFormat, TextArch

BF16_BYTES = 2
_BF16 = QuantFormat(name="bf16", bits_per_weight=16, quantizes_embeddings=True, label="bfloat16")


@dataclass(frozen=True)
class WeightTerm:
    """One component's weights for the whole model (all ranks together)."""

    name: str
    params: int
    bytes_per_param: float
    sharded: bool  # split evenly across tensor-parallel ranks
    note: str

    @property
    def bytes(self) -> int:
        return round(self.params * self.bytes_per_param)

    def bytes_per_gpu(self, tp: int) -> int:
        return -(-self.bytes // tp) if self.sharded else self.bytes


def attention_params(text: TextArch) -> int:
    """q/k/v/o projections of every layer. Full-attention layers use the global head size and
    KV heads; with `attention_k_eq_v` they have no v_proj (K doubles as V). KV-shared layers
    have no k/v projections at all (transformers' Gemma4TextAttention builds none)."""
    total = 0
    for layer in range(text.num_hidden_layers):
        if text.is_full_attention(layer):
            head_dim, kv_heads = text.global_head_dim, text.num_global_key_value_heads
            kv_projections = 1 if text.attention_k_eq_v else 2
        else:
            head_dim, kv_heads = text.head_dim, text.num_key_value_heads
            kv_projections = 2
        if text.is_kv_shared(layer):
            kv_projections = 0
        q_and_o = 2 * text.hidden_size * text.num_attention_heads * head_dim
        total += q_and_o + kv_projections * text.hidden_size * kv_heads * head_dim
    return total


def mlp_params(text: TextArch) -> int:
    """Dense gated MLP (gate, up, down) of every layer; doubled in KV-shared layers when
    `use_double_wide_mlp` (E2B)."""
    return sum(
        3 * text.hidden_size * text.mlp_intermediate(layer)
        for layer in range(text.num_hidden_layers)
    )


def expert_params(text: TextArch) -> int:
    """Routed experts (gate, up, down each) plus the router, in every layer (26B-A4B)."""
    if text.moe is None:
        return 0
    per_expert = 3 * text.hidden_size * text.moe.moe_intermediate_size
    router = text.hidden_size * text.moe.num_experts
    return text.num_hidden_layers * (text.moe.num_experts * per_expert + router)


def active_expert_params(text: TextArch) -> int:
    """Expert weights one token actually reads (top_k of num_experts, plus the router)."""
    if text.moe is None:
        return 0
    per_expert = 3 * text.hidden_size * text.moe.moe_intermediate_size
    router = text.hidden_size * text.moe.num_experts
    return text.num_hidden_layers * (text.moe.top_k * per_expert + router)


def per_layer_input_params(text: TextArch) -> int:
    """Linear layers of the per-layer-embedding (PLE) path: one model-level projection from the
    hidden state to every layer's input, and a gate + projection inside each layer."""
    ple = text.hidden_size_per_layer_input
    if ple == 0:
        return 0
    model_projection = text.hidden_size * text.num_hidden_layers * ple
    per_layer = 2 * text.hidden_size * ple
    return model_projection + text.num_hidden_layers * per_layer


def ple_table_params(text: TextArch, vocab_size: int) -> int:
    """The per-layer embedding table: one `ple`-wide row per layer for every vocabulary entry.
    vLLM keeps it on the GPU (VocabParallelEmbedding)."""
    return vocab_size * text.num_hidden_layers * text.hidden_size_per_layer_input


def norm_params(text: TextArch) -> int:
    """Small bf16 vectors, replicated on every rank: per layer the RMSNorm scales around
    attention and the MLP (four; one more after the PLE input; three more and the router's
    scales around the MoE block), q/k norms of the layer's head size (no k norm where the
    layer shares KV), then the final norm and the PLE projection's norm. Counted as
    transformers' Gemma4ForCausalLM builds them (tests/foundation/test_vram_transformers.py)."""
    ple = text.hidden_size_per_layer_input
    hidden_norms = 4 + (1 if ple else 0) + (4 if text.moe is not None else 0)
    total = text.hidden_size + ple  # final norm, PLE projection norm
    for layer in range(text.num_hidden_layers):
        head_dim = text.global_head_dim if text.is_full_attention(layer) else text.head_dim
        total += hidden_norms * text.hidden_size
        total += head_dim if text.is_kv_shared(layer) else 2 * head_dim
        if text.moe is not None:
            total += text.moe.num_experts  # the router's per-expert scale
    return total


def weight_terms(
    model: ModelSpec, quant: QuantFormat, vocab_size: int, *, text_only: bool = False
) -> list[WeightTerm]:
    """Every weight component of `model` at `quant`; `text_only` drops the vision and audio
    encoders (vLLM's --language-model-only)."""
    text = model.text
    linear = quant.bytes_per_weight
    embed = quant.bytes_per_weight if quant.quantizes_embeddings else BF16_BYTES
    terms = [
        WeightTerm("attention", attention_params(text), linear, True, "q/k/v/o projections"),
        WeightTerm("mlp", mlp_params(text), linear, True, "dense gated MLP"),
    ]
    if text.moe is not None:
        note = f"{text.moe.num_experts} experts x {text.num_hidden_layers} layers + router"
        terms.append(WeightTerm("experts", expert_params(text), linear, True, note))
    if text.hidden_size_per_layer_input:
        terms.append(
            WeightTerm(
                "per_layer_inputs",
                per_layer_input_params(text),
                linear,
                True,
                "PLE projections and gates",
            )
        )
        terms.append(
            WeightTerm(
                "ple_table",
                ple_table_params(text, vocab_size),
                embed,
                True,
                "per-layer embedding table, on GPU in vLLM",
            )
        )
    terms.append(
        WeightTerm(
            "embeddings",
            vocab_size * text.hidden_size,
            embed,
            True,
            "token embeddings, tied with the LM head",
        )
    )
    terms.append(WeightTerm("norms", norm_params(text), BF16_BYTES, False, "RMSNorm scales"))
    if not text_only:
        for name, encoder in (("vision_encoder", model.vision), ("audio_encoder", model.audio)):
            if encoder is not None:
                terms.append(
                    WeightTerm(
                        name, round(encoder.params), BF16_BYTES, False, "bf16, replicated per rank"
                    )
                )
    return terms


def text_params(model: ModelSpec, vocab_size: int) -> int:
    """All decoder parameters including embeddings and PLE tables (no encoders)."""
    # Parameter counts do not depend on the format; any one lists the terms.
    return sum(t.params for t in weight_terms(model, _BF16, vocab_size, text_only=True))


def decode_read_bytes(model: ModelSpec, quant: QuantFormat, vocab_size: int, tp: int) -> int:
    """Weight bytes one decode step reads per GPU: every decoder linear (only the routed experts'
    share for MoE) and the tied LM head; embedding and PLE lookups read a few rows only."""
    text = model.text
    terms = {t.name: t for t in weight_terms(model, quant, vocab_size, text_only=True)}
    read = 0.0
    for name in ("attention", "mlp", "per_layer_inputs"):
        if name in terms:
            read += terms[name].bytes
    if "experts" in terms:
        read += active_expert_params(text) * quant.bytes_per_weight
    read += terms["embeddings"].bytes  # the LM head is the tied embedding matrix
    return round(read / tp) + terms["norms"].bytes
