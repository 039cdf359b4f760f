"""Greedy token ids from real vLLM (CPU build, float32) for test_parity.py, run as a subprocess.

Usage: python vllm_greedy.py REQUEST.json -> prints one line "GREEDY <json>".
REQUEST.json: {"max_tokens": N, "runs": [{"model": PATH, "prompts": [[ids...], ...]}, ...]}.
vLLM's offline `LLM` starts its engine in a spawned process, so the entry point is guarded.
"""

from __future__ import annotations

import gc
import json
import sys
from pathlib import Path


def main() -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    request = json.loads(Path(sys.argv[1]).read_text())
    # ignore_eos: compare a fixed number of tokens even if a random model emits <eos> early
    params = SamplingParams(max_tokens=request["max_tokens"], temperature=0.0, ignore_eos=True)
    results = []
    for run in request["runs"]:
        llm = LLM(
            model=run["model"],
            dtype="float32",
            max_model_len=512,
            max_num_seqs=4,
            enforce_eager=True,
            seed=0,
        )
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in run["prompts"]]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        results.append([list(o.outputs[0].token_ids) for o in outputs])
        del llm
        gc.collect()
    print("GREEDY " + json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
