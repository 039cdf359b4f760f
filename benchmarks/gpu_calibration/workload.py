"""Write spec.json: what measure.py runs on a GPU, derived from the catalog.

measure.py runs on a machine with only PyTorch (and transformers) installed, so everything it
needs from gemma-fleet travels in this file:

- for each Gemma 4 size, the linear layers one forward pass multiplies by, fused as vLLM fuses
  them (q/k/v into one matmul, gate and up into one), layer by layer, with the routed experts
  of the MoE block and the tied LM head;
- the transformers `Gemma4TextConfig` arguments of the real size, for whole-model prefills;
- the token counts to run (decode batches and prefill chunks).

Reproduce: .venv/bin/python benchmarks/gpu_calibration/workload.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gemma_fleet.catalog import ModelSpec, TextArch, load_catalog
from gemma_fleet.deployments.checkpoints import real_size_text_config
from gemma_fleet.vram.weights import active_expert_params, weight_terms

HERE = Path(__file__).parent
# Decode steps: one token per running request. Prefill chunks: vLLM's chunk budget
# (max_num_batched_tokens) is 2,048 to 8,192 tokens in the configurations we serve.
DECODE_BATCHES = [1, 8, 32, 128, 256]
PREFILL_TOKENS = [2048, 8192]
# Weight formats measured per size: bf16 everywhere; fp8 (W8A8, per-tensor scales) for the
# dense 31B, the configuration of the published decode anchor (docs/simulator.md).
FORMATS = {
    "gemma-4-E2B": ["bf16"],
    "gemma-4-E4B": ["bf16"],
    "gemma-4-26B-A4B": ["bf16"],
    "gemma-4-31B": ["bf16", "fp8"],
}


def layer_linears(text: TextArch, layer: int) -> list[dict[str, Any]]:
    """The dense matmuls of one decoder layer, as [in_features, out_features]."""
    full = text.is_full_attention(layer)
    head_dim = text.global_head_dim if full else text.head_dim
    kv_heads = text.num_global_key_value_heads if full else text.num_key_value_heads
    kv_projections = 1 if (full and text.attention_k_eq_v) else 2
    if text.is_kv_shared(layer):
        kv_projections = 0
    q = text.num_attention_heads * head_dim
    hidden = text.hidden_size
    ops = [
        {"name": "qkv", "in": hidden, "out": q + kv_projections * kv_heads * head_dim},
        {"name": "o", "in": q, "out": hidden},
        {"name": "gate_up", "in": hidden, "out": 2 * text.mlp_intermediate(layer)},
        {"name": "down", "in": text.mlp_intermediate(layer), "out": hidden},
    ]
    if text.hidden_size_per_layer_input:
        ple = text.hidden_size_per_layer_input
        ops += [
            {"name": "ple_gate", "in": hidden, "out": ple},
            {"name": "ple_proj", "in": ple, "out": hidden},
        ]
    if text.moe is not None:
        ops.append({"name": "router", "in": hidden, "out": text.moe.num_experts})
    return ops


def model_entry(name: str, spec: ModelSpec, vocab: int) -> dict[str, Any]:
    text = spec.text
    layers = [layer_linears(text, i) for i in range(text.num_hidden_layers)]
    entry: dict[str, Any] = {
        "model": name,
        "formats": FORMATS[name],
        "hidden": text.hidden_size,
        "vocab": vocab,
        "layers": layers,
        # Once per step, before the layers: the hidden state to every layer's PLE input.
        "model_linears": (
            [{"name": "ple_model", "in": text.hidden_size, "out": text.num_hidden_layers * ple}]
            if (ple := text.hidden_size_per_layer_input)
            else []
        ),
        "moe": (
            {
                "num_experts": text.moe.num_experts,
                "top_k": text.moe.top_k,
                "intermediate": text.moe.moe_intermediate_size,
            }
            if text.moe is not None
            else None
        ),
        "hf_text_config": real_size_text_config(spec, vocab),
    }
    # The stack must multiply by exactly the parameters the roofline counts per token.
    per_token = sum(op["in"] * op["out"] for ops in layers for op in ops)
    per_token += sum(op["in"] * op["out"] for op in entry["model_linears"])
    if text.moe is not None:
        per_token += (
            text.num_hidden_layers * text.moe.top_k * 3 * text.hidden_size
        ) * text.moe.moe_intermediate_size
    terms = {t.name: t.params for t in weight_terms(spec, load_catalog().quant("bf16"), vocab)}
    counted = sum(terms.get(n, 0) for n in ("attention", "mlp", "per_layer_inputs"))
    assert per_token == counted + active_expert_params(text), (name, per_token, counted)
    return entry


def build_spec() -> dict[str, Any]:
    catalog = load_catalog()
    vocab = catalog.family.vocab_size
    return {
        "decode_batches": DECODE_BATCHES,
        "prefill_tokens": PREFILL_TOKENS,
        "models": [model_entry(name, spec, vocab) for name, spec in catalog.models.items()],
    }


if __name__ == "__main__":
    out = HERE / "spec.json"
    out.write_text(json.dumps(build_spec(), indent=1) + "\n")
    print(f"wrote {out}")
