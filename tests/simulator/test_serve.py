"""The simulator behind a real Ray Serve LLM `LLMServer` (slow: starts a Ray cluster)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
)
from ray.llm._internal.serve.core.server.builder import build_llm_deployment
from ray.serve.handle import DeploymentResponse, DeploymentResponseGenerator

from gemma_fleet.deployments.engines.simulator import (
    SimulatorConfig,
    simulator_bind_kwargs,
    simulator_llm_config,
)
from gemma_fleet.deployments.engines.wire import ChatCall, EngineError, JsonReply, SseReply

pytestmark = pytest.mark.slow
SERVE_HTTP_PORT = 8710  # this suite's range is 8710-8719


def streamed(answer: DeploymentResponse[Any] | DeploymentResponseGenerator[Any]) -> list[Any]:
    """What a handle with stream=True yields, as a list (its type admits a plain response)."""
    assert isinstance(answer, DeploymentResponseGenerator)
    return list(answer)


def _request(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model="gemma-sim",
        messages=[{"role": "user", "content": "Tell me about the fleet."}],
        **body,
    )


def test_simulator_engine_serves_chat_behind_llm_server(ray_cluster: str) -> None:
    config = SimulatorConfig(model="gemma-4-31B", gpu="H100-80GB", quant="fp8", speedup=50.0)
    llm_config = simulator_llm_config(
        "gemma-sim",
        config,
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
    )
    app = build_llm_deployment(llm_config, bind_kwargs=simulator_bind_kwargs())
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_HTTP_PORT})
    try:
        handle = serve.run(app, name="simulator", route_prefix=None)
        stream_handle = handle.options(stream=True)

        # Non-streaming: one ChatCompletionResponse.
        [response] = streamed(stream_handle.chat.remote(_request(max_tokens=8, ignore_eos=True)))
        assert isinstance(response, ChatCompletionResponse)
        assert response.usage.completion_tokens == 8
        assert response.choices[0].finish_reason == "length"

        # Streaming: LLMServer batches the engine's SSE strings into lists.
        batches = streamed(
            stream_handle.chat.remote(
                _request(max_tokens=12, ignore_eos=True, stream=True,
                         stream_options={"include_usage": True})
            )
        )  # fmt: skip
        lines = [line for batch in batches for line in batch]
        assert lines[-1] == "data: [DONE]\n\n"
        chunks = [json.loads(line[len("data: ") :]) for line in lines[:-1]]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert chunks[-1]["usage"]["completion_tokens"] == 12

        # What the gateway calls: plain data in and out (engines/wire.py), so that its process
        # needs none of vLLM's classes. A body vLLM's request model refuses is a 400 naming
        # the field, not an exception in Ray.
        body = {"model": "gemma-sim", "messages": [{"role": "user", "content": "Hi."}]}
        [[whole]] = streamed(stream_handle.answer.remote(
            ChatCall("chat", {**body, "max_tokens": 5, "ignore_eos": True})
        ))  # fmt: skip
        assert isinstance(whole, JsonReply) and whole.body["usage"]["completion_tokens"] == 5
        events = [reply for batch in streamed(stream_handle.answer.remote(
            ChatCall("chat", {**body, "max_tokens": 4, "ignore_eos": True, "stream": True})
        )) for reply in batch]  # fmt: skip
        assert all(isinstance(reply, SseReply) for reply in events)
        assert "".join(r.text for r in events if isinstance(r, SseReply)).endswith("[DONE]\n\n")
        [[counted]] = streamed(stream_handle.answer.remote(ChatCall("tokenize", body)))
        assert isinstance(counted, JsonReply) and counted.body["count"] > 0
        [[refused]] = streamed(stream_handle.answer.remote(
            ChatCall("chat", {**body, "max_tokens": "many"})
        ))  # fmt: skip
        assert isinstance(refused, EngineError) and refused.status == 400
        assert refused.param == "max_tokens", refused

        # Metrics and routing stats are reachable from the deployment.
        [text] = handle.collective_rpc.remote(method="prometheus_metrics").result()
        assert 'vllm:generation_tokens_total{engine="0",model_name="gemma-sim"} 29.0' in text
        handle.check_health.remote().result()
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
