"""The VRAM model's parameter counts against transformers' own Gemma 4 modules, exactly.

transformers builds Gemma4ForCausalLM at each real size from the catalog's architecture facts
(on the meta device: shapes only, no memory), and every parameter tensor is sorted into the
weight term that should count it. Each term must match to the parameter: the profile's weight
bytes are then exact for the text model, not an estimate. A tensor that fits no term (a new
component in a newer transformers) fails the test by name.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.checkpoints import real_size_text_config
from gemma_fleet.vram.weights import weight_terms

CATALOG = load_catalog()

# Parameter names (layer indices removed) -> the weight term that counts them.
TERM_OF = [
    (r"^model\.embed_tokens\.weight$", "embeddings"),
    (r"^model\.embed_tokens_per_layer\.weight$", "ple_table"),
    (r"^model\.layers\.self_attn\.[qkvo]_proj\.weight$", "attention"),
    (r"^model\.layers\.mlp\.(gate|up|down)_proj\.weight$", "mlp"),
    (r"^model\.layers\.(experts\.(gate_up|down)_proj|router\.proj\.weight)$", "experts"),
    (
        r"^model\.(layers\.per_layer_(input_gate|projection)|per_layer_model_projection)"
        r"\.weight$",
        "per_layer_inputs",
    ),
    (r"norm(_\d)?\.weight$|^model\.layers\.router\.(scale|per_expert_scale)$", "norms"),
]


def _transformers_counts(model: str) -> Counter[str]:
    # Imported here, not at the top: torch takes seconds, which every collection would pay.
    import torch
    import transformers

    spec = CATALOG.model(model)
    config = transformers.Gemma4TextConfig(**real_size_text_config(spec, CATALOG.family.vocab_size))
    with torch.device("meta"):
        module = transformers.Gemma4ForCausalLM(config)
    counts: Counter[str] = Counter()
    for name, param in module.named_parameters():
        generic = re.sub(r"\.\d+\.", ".", name)
        terms = [term for pattern, term in TERM_OF if re.search(pattern, generic)]
        assert len(terms) == 1, f"{name}: matches {terms or 'no weight term'}"
        counts[terms[0]] += param.numel()
    return counts


@pytest.mark.parametrize("model", list(CATALOG.models))
def test_every_weight_term_matches_transformers(model: str) -> None:
    ours = {
        t.name: t.params
        for t in weight_terms(
            CATALOG.model(model), CATALOG.quant("bf16"), CATALOG.family.vocab_size, text_only=True
        )
    }
    assert ours == dict(_transformers_counts(model))
