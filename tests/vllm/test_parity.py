"""Greedy parity: real vLLM (CPU build) and transformers pick the same tokens, in float32, on
the tiny checkpoints of each decoder variant (dense k_eq_v, MoE, KV-shared with per-layer
inputs). Same token ids means vLLM's Gemma 4 implementation computes what the reference does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gemma_fleet.deployments.checkpoints import ensure_tiny_checkpoint

pytestmark = pytest.mark.slow

VARIANTS = ("text", "moe", "kv-shared")
NEW_TOKENS = 16
PROMPTS = (
    "def hello(world):",
    "The quick brown fox jumps over",
    "Weather in Paris today? It is sunny and warm, about twenty degrees.",
)
# Per variant: its run (variant, model path, prompt token ids) and vLLM's greedy tokens per prompt.
ParityRuns = dict[str, tuple[dict[str, Any], list[list[int]]]]


def _hf_greedy(path: Path, prompts: list[list[int]]) -> list[list[int]]:
    """Plain argmax decoding with full forward passes: no cache, no stopping rules."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()  # type: ignore[no-untyped-call]
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            for _ in range(NEW_TOKENS):
                logits = model(ids).logits[0, -1]
                ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
            out.append(ids[0, len(prompt) :].tolist())
    return out


@pytest.fixture(scope="module")
def parity_runs(checkpoint_root: Path, tmp_path_factory: pytest.TempPathFactory) -> ParityRuns:
    from transformers import AutoTokenizer

    runs: list[dict[str, Any]] = []
    for variant in VARIANTS:
        path = ensure_tiny_checkpoint(variant, checkpoint_root)
        tok = AutoTokenizer.from_pretrained(path)
        prompts = [tok(p)["input_ids"] for p in PROMPTS]
        runs.append({"variant": variant, "model": str(path), "prompts": prompts})
    request = tmp_path_factory.mktemp("parity") / "request.json"
    request.write_text(json.dumps({"max_tokens": NEW_TOKENS, "runs": runs}))
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vllm_greedy.py")), str(request)],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("GREEDY ")]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    vllm_ids = json.loads(lines[-1].removeprefix("GREEDY "))
    return {run["variant"]: (run, ids) for run, ids in zip(runs, vllm_ids, strict=True)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_vllm_and_transformers_agree_token_for_token(variant: str, parity_runs: ParityRuns) -> None:
    run, vllm_ids = parity_runs[variant]
    hf_ids = _hf_greedy(Path(run["model"]), run["prompts"])
    assert all(len(ids) == NEW_TOKENS for ids in vllm_ids)
    assert vllm_ids == hf_ids
