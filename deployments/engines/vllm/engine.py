"""Ray Serve LLM's vLLM engine, with the one repair this fleet's Ray and vLLM need.

Ray 2.60's `VLLMEngine` looks for vLLM's tokenization server on the app state under
`openai_serving_tokenization`; vLLM 0.32 names it `serving_tokenization`. Unrepaired, every
`LLMServer.tokenize` call answers "This model does not support the 'tokenization' task", and
the gateway's /v1/messages/count_tokens, which asks the engine to count a chat's prompt, cannot
work. `build_llm_config` names this class in the replica's RAYLLM_VLLM_ENGINE_CLS, Ray Serve
LLM's documented hook for its engine class; everything else is Ray's engine unchanged.

Imported only inside a pool replica (it needs vLLM and Ray Serve LLM).
"""

from __future__ import annotations

from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine


class GemmaVllmEngine(VLLMEngine):
    async def start(self) -> None:
        await super().start()
        if getattr(self, "_oai_serving_tokenization", None) is None:
            state = getattr(self, "_app_state", None)
            self._oai_serving_tokenization = getattr(state, "serving_tokenization", None)
