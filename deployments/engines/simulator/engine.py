"""The simulator as a Ray Serve LLM engine: `SimulatorEngine` sits behind Ray Serve LLM's
`LLMServer` deployment exactly where vLLM's engine does.

    build_llm_deployment(simulator_llm_config("gemma-4-31B-h100", config),
                         bind_kwargs=simulator_bind_kwargs())

LLMServer.start() only constructs the engine class and awaits engine.start() (then pushes a
telemetry report, which never raises): no model download, no tokenizer, no checkpoint. The
simulator reads its SimulatorConfig from llm_config.experimental_configs[EXPERIMENTAL_CONFIG_KEY].

Protocol conventions followed (ray.llm._internal.serve.core.engine.protocol and its vLLM
engine): streaming yields "data: {json}\\n\\n" strings in OpenAI chunk format, the usage chunk
when stream_options.include_usage, then "data: [DONE]\\n\\n"; non-streaming yields one
ChatCompletionResponse / CompletionResponse; errors yield one ErrorResponse.

OpenAI's n as vLLM serves it: n sequences of their own in the scheduler (vLLM's child requests,
"{i}_{request id}"), each sampled apart (choice i of a seeded request from seed + i); streamed,
every choice opens with its role chunk and the choices' token chunks interleave, one choice a
chunk; the usage counts every choice's tokens; n > 1 at temperature 0 is refused, as vLLM
refuses it ("n must be 1 when using greedy sampling"). `tokenize` of chat messages renders
them (with their tools) as chat does, so its count is a chat request's prompt_tokens.

Completions' echo as vLLM's serving layer gives it (docs/simulator.md): each choice's text
is its prompt then its answer (streamed: the prompt opens its first chunk), logprobs cover the
prompt's tokens too, usage is unchanged; max_tokens 0 with echo answers the prompt alone.

Tracing: each chat/completions call is one `engine.generate` span whose parent is the trace
context in `raw_request_info.headers` (W3C traceparent, sent by the gateway's pool clients);
`start()` turns tracing on when the replica's OTEL_* environment asks for it.

Metrics: `routing_stats()` carries a snapshot (running, waiting, KV usage); the full Prometheus
text is returned by `collective_rpc("prometheus_metrics")`, reachable through the deployment
handle as `handle.collective_rpc.remote(method="prometheus_metrics")` (a one-element list).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig, LLMConfig
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    ErrorInfo,
    ErrorResponse,
    TokenizeResponse,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from vllm.entrypoints.generate.base.protocol import (
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    ToolCall,
)
from vllm.entrypoints.openai.chat_completion.protocol import (
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
    ChatCompletionResponseChoice,
    ChatCompletionResponseStreamChoice,
    ChatMessage,
)
from vllm.entrypoints.openai.completion.protocol import (
    CompletionLogProbs,
    CompletionResponseChoice,
    CompletionResponseStreamChoice,
)
from vllm.entrypoints.serve.engine.protocol import (
    CompletionTokenUsageInfo,
    PromptTokenUsageInfo,
    UsageInfo,
)
from vllm.logprobs import Logprob

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.config import (
    EXPERIMENTAL_CONFIG_KEY,
    SimulatorConfig,
)
from gemma_fleet.deployments.engines.simulator.content import AnswerPlan, plan_answer
from gemma_fleet.deployments.engines.simulator.core import SimulatorCore
from gemma_fleet.deployments.engines.simulator.logprobs import (
    MAX_LOGPROBS,
    Position,
    answer_logprobs,
    prompt_logprobs,
    token_bytes,
)
from gemma_fleet.deployments.engines.simulator.prompt import (
    RequestError,
    answer_spec,
    check_modalities,
    render_chat,
    resolve_max_tokens,
)
from gemma_fleet.deployments.engines.simulator.schema_gen import SchemaError
from gemma_fleet.telemetry import (
    Span,
    SpanKind,
    configure_tracing,
    end_with,
    extract_context,
    mark_failed,
    names,
    start_span,
)

_T = TypeVar("_T")

PROMETHEUS_METRICS_RPC = "prometheus_metrics"
# vLLM's threshold for greedy sampling (vllm.sampling_params._SAMPLING_EPS).
GREEDY_TEMPERATURE = 1e-5


def _final(item: object) -> bool:
    """Whether `item` is the last of a call's answers: a non-streaming answer or an error is
    the only one, and a stream ends with [DONE]."""
    return not isinstance(item, str) or item == "data: [DONE]\n\n"


def _error(message: str, code: int = 400, param: str | None = None) -> ErrorResponse:
    kind = "BadRequestError" if code < 500 else "InternalServerError"
    return ErrorResponse(error=ErrorInfo(message=message, type=kind, param=param, code=code))


class EngineCheckError(RequestError):
    """Refused where vLLM's engine refuses it (SamplingParams.verify, once generation has
    started), not where its frontend does: vLLM answers a stream with an error event and
    [DONE], and only a request that is not streamed with the 400 itself."""


def _refusal(exc: RequestError | SchemaError, stream: bool | None) -> list[str | ErrorResponse]:
    """What the simulator answers a request refused with `exc`, as vLLM would."""
    error = _error(str(exc), param=exc.param)
    if stream and isinstance(exc, EngineCheckError):
        # vLLM's create_streaming_error_response: the ErrorResponse as one event.
        return [f"data: {json.dumps(error.model_dump())}\n\n", "data: [DONE]\n\n"]
    return [error]


def _sse(chunk: Any) -> str:
    return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"


def _sse_usage(chunk: Any) -> str:
    """The final usage chunk, serialised like vLLM's (exclude_none as well)."""
    return f"data: {chunk.model_dump_json(exclude_unset=True, exclude_none=True)}\n\n"


def config_from(llm_config: LLMConfig) -> SimulatorConfig:
    raw = llm_config.experimental_configs.get(EXPERIMENTAL_CONFIG_KEY)
    if raw is None:
        raise ValueError(
            f"LLMConfig.experimental_configs[{EXPERIMENTAL_CONFIG_KEY!r}] must hold a "
            "SimulatorConfig for the simulator engine"
        )
    return raw if isinstance(raw, SimulatorConfig) else SimulatorConfig.model_validate(raw)


class SimulatorEngine(LLMEngine):
    """A simulated vLLM engine (see the module docstring)."""

    def __init__(self, llm_config: LLMConfig) -> None:
        self.llm_config = llm_config
        self.config = config_from(llm_config)
        self.model_id = llm_config.model_id
        self.model_spec = load_catalog().model(self.config.model)
        self.core = SimulatorCore(self.config, model_name=self.model_id)
        self._sleeping = False

    async def start(self) -> None:
        configure_tracing("gemma-fleet-engine")
        await self.core.start()

    def routing_stats(self) -> dict[str, Any]:
        return {"simulator": self.core.stats()}

    async def resolve_lora(self, lora_model: DiskMultiplexConfig) -> None:
        raise ValueError("the simulator engine does not serve LoRA adapters")

    async def check_health(self) -> None:
        self.core.check_health()

    async def reset_prefix_cache(self) -> None:
        self.core.pool.reset_prefix_cache()

    async def sleep(self, **kwargs: Any) -> None:
        self._sleeping = True
        self.core.pause()

    async def wakeup(self, **kwargs: Any) -> None:
        self._sleeping = False
        self.core.resume()

    async def is_sleeping(self) -> bool:
        return self._sleeping

    async def pause(self, **kwargs: Any) -> None:
        self.core.pause()

    async def resume(self, **kwargs: Any) -> None:
        self.core.resume()

    async def is_paused(self) -> bool:
        return self.core.paused

    async def start_profile(self) -> None:
        return None

    async def stop_profile(self) -> None:
        return None

    async def shutdown(self) -> None:
        await self.core.shutdown()

    async def collective_rpc(
        self,
        method: str,
        timeout: float | None = None,  # noqa: ASYNC109 (the protocol's signature)
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> list[Any]:
        """`prometheus_metrics` returns [the Prometheus text]; `stats` returns [a snapshot]."""
        if method == PROMETHEUS_METRICS_RPC:
            return [self.metrics_text()]
        if method == "stats":
            return [self.core.stats()]
        raise NotImplementedError(f"the simulator has no worker method {method!r}")

    def metrics_text(self) -> str:
        return self.core.metrics.render()

    # ---- helpers ---------------------------------------------------------------------------
    def _rng(self, seed: int | None, prompt_ids: list[int], index: int = 0) -> random.Random:
        """The sampler of choice `index`: as vLLM seeds the child requests of n > 1, a seeded
        request's choice i draws from seed + i; unseeded choices draw apart from each other
        (the first as an n=1 request would)."""
        if seed is not None:
            return random.Random(seed + index)
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(self.config.seed).encode())
        digest.update(",".join(map(str, prompt_ids)).encode())
        if index:
            digest.update(f"#{index}".encode())
        return random.Random(int.from_bytes(digest.digest(), "little"))

    def _child_ids(self, request_id: str, n: int, prompts: int = 1) -> list[str]:
        """Engine ids of a request's sequences, prompt by prompt: the request's own for one
        prompt and n=1; a batch's prompt j is "{id}-{j}", as vLLM's completions name them,
        and n > 1 gives vLLM's child ids ("{i}_{id}") of each; made unique should a client
        reuse an id still running."""
        bases = [request_id] if prompts == 1 else [f"{request_id}-{j}" for j in range(prompts)]
        ids = [base if n == 1 else f"{i}_{base}" for base in bases for i in range(n)]
        if all(self.core.request(i) is None for i in ids):
            return ids
        return self._child_ids(f"{request_id}-{uuid.uuid4()}", n, prompts)

    def _plans(
        self, request: ChatCompletionRequest | CompletionRequest, prompt: list[int], spec: Any
    ) -> list[AnswerPlan]:
        """One answer per choice (OpenAI's n), each sampled on its own (`_rng`)."""
        n = request.n or 1
        temperature = request.temperature
        if n > 1 and temperature is not None and temperature < GREEDY_TEMPERATURE:
            # vLLM's SamplingParams refuses it: greedy decoding has one answer.
            raise RequestError(f"n must be 1 when using greedy sampling, got {n}.", param="n")
        _check_logprobs(_logprobs_asked(request))
        _check_logit_bias(request.logit_bias)
        length = (self.config.answer_tokens_min, self.config.answer_tokens_max)
        return [plan_answer(spec, self._rng(request.seed, prompt, i), length) for i in range(n)]

    def _generate(
        self, request_id: str, prompts: list[list[int]], plans: list[AnswerPlan]
    ) -> tuple[AsyncGenerator[Any, None], dict[str, int]]:
        """Token events of every choice's sequence, interleaved as the engine makes them,
        and the choice index of each sequence's engine id. `plans` holds each prompt's n
        choices in turn: prompt j's choice i is choice j * n + i, vLLM's index."""
        n = len(plans) // len(prompts)
        ids = self._child_ids(request_id, n, len(prompts))
        children = [
            (i, prompts[k // n], p.token_ids, p.finish_reason)
            for k, (i, p) in enumerate(zip(ids, plans, strict=True))
        ]
        return self.core.generate_group(children), {i: k for k, i in enumerate(ids)}

    async def _run_to_end(
        self,
        traced: Span,
        events: AsyncIterator[Any],
        prompt: int,
        plans: list[AnswerPlan],
        chat: bool,
    ) -> UsageInfo:
        """Run a non-streamed request's sequences to the end: its usage over every choice."""
        cached = 0
        async for event in events:
            cached = max(cached, event.num_cached_tokens)
        completion = sum(len(p.pieces) for p in plans)
        traced.set_attribute(names.OUTPUT_TOKENS, completion)
        reasoning = sum(p.reasoning_tokens for p in plans) if chat else None
        return self._usage(prompt, completion, cached, reasoning)

    def _usage(
        self, prompt: int, completion: int, cached: int, reasoning: int | None = None
    ) -> UsageInfo:
        """Usage as vLLM reports it; `reasoning` is set on chat answers, where a pool's
        reasoning parser (Gemma 4's) has vLLM count the thinking tokens apart."""
        return UsageInfo(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=PromptTokenUsageInfo(cached_tokens=cached),
            completion_tokens_details=None
            if reasoning is None
            else CompletionTokenUsageInfo(reasoning_tokens=reasoning),
        )

    def _generate_span(
        self,
        operation: str,
        request: ChatCompletionRequest | CompletionRequest,
        raw_request_info: RawRequestInfo | None,
    ) -> Span:
        """The engine.generate span of one call, under the caller's propagated context."""
        headers = raw_request_info.headers if raw_request_info is not None else None
        traced = start_span(
            names.ENGINE_GENERATE, kind=SpanKind.SERVER, parent=extract_context(headers)
        )
        if traced.is_recording():
            traced.set_attributes(
                {
                    names.POOL: self.model_id,
                    names.OPERATION: operation,
                    names.REQUEST_MODEL: request.model or self.model_id,
                    names.RESPONSE_MODEL: self.config.model,
                    names.STREAM: bool(request.stream),
                }
            )
        return traced

    @staticmethod
    def _finish(reason: str, plan: AnswerPlan, finished: bool) -> dict[str, Any]:
        """A choice's finish fields: none until the last token; then the finish reason and,
        as vLLM does, the stop string that ended the text in stop_reason (set only then, so
        streamed chunks, which serialise with exclude_unset, carry it only when vLLM's do)."""
        if not finished:
            return {"finish_reason": None}
        if plan.stop_reason is None:
            return {"finish_reason": reason}
        return {"finish_reason": reason, "stop_reason": plan.stop_reason}

    @staticmethod
    def _record_plans(traced: Span, prompt_tokens: int, finishes: list[str]) -> None:
        if traced.is_recording():
            traced.set_attributes(
                {
                    names.INPUT_TOKENS: prompt_tokens,
                    names.FINISH_REASONS: finishes,
                }
            )

    # ---- chat ------------------------------------------------------------------------------
    async def chat(  # type: ignore[override]
        self,
        request: ChatCompletionRequest,
        raw_request_info: RawRequestInfo | None = None,
    ) -> AsyncGenerator[str | ChatCompletionResponse | ErrorResponse, None]:
        traced = self._generate_span("chat", request, raw_request_info)
        async with aclosing(end_with(traced, self._chat(request, traced), _final)) as items:
            async for item in items:
                yield item

    async def _chat(
        self, request: ChatCompletionRequest, traced: Span
    ) -> AsyncIterator[str | ChatCompletionResponse | ErrorResponse]:
        try:
            prompt, plans = self._prepare_chat(request)
        except (RequestError, SchemaError) as exc:
            mark_failed(traced, str(exc))
            for item in _refusal(exc, request.stream):
                yield item
            return
        response_id = f"chatcmpl-{request.request_id}"
        created = int(time.time())
        named = isinstance(request.tool_choice, dict) or hasattr(request.tool_choice, "function")
        # OpenAI: a named tool choice finishes with "stop"
        finishes = [
            "stop" if p.finish_reason == "tool_calls" and named else p.finish_reason for p in plans
        ]
        self._record_plans(traced, len(prompt), finishes)
        events, choice_of = self._generate(request.request_id, [prompt], plans)
        width = _logprobs_asked(request)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            # As vLLM: each choice opens with its role, sent with the engine's first output
            # (after the prefill), so the stream's first event marks the first token.
            roles = [
                _sse(
                    ChatCompletionStreamResponse(
                        id=response_id,
                        object="chat.completion.chunk",
                        created=created,
                        model=self.model_id,
                        choices=[
                            ChatCompletionResponseStreamChoice(
                                index=index,
                                delta=DeltaMessage(role="assistant", content=""),
                                logprobs=None,
                                finish_reason=None,
                            )
                        ],
                    )
                )
                for index in range(len(plans))
            ]

            def choice(event: Any) -> ChatCompletionResponseStreamChoice:
                index = choice_of[event.request_id]
                plan, at = plans[index], event.index
                return ChatCompletionResponseStreamChoice(
                    index=index,
                    delta=self._chat_delta(plan, at),
                    logprobs=None
                    if width is None
                    else ChatCompletionLogProbs(
                        content=_chat_entries(plan, width, range(at, at + 1))
                    ),
                    **self._finish(finishes[index], plan, event.finished),
                )

            tokens = self._stream_tokens(
                traced,
                events,
                len(prompt),
                include_usage,
                ChatCompletionStreamResponse,
                {"id": response_id, "object": "chat.completion.chunk", "created": created},
                choice,
                {seq: plans[index] for seq, index in choice_of.items()},
                roles,
            )
            async with aclosing(tokens):  # a caller that hangs up frees the sequences now
                async for sse in tokens:
                    yield sse
            return
        usage = await self._run_to_end(traced, events, len(prompt), plans, chat=True)
        choices = []
        for index, (plan, finish) in enumerate(zip(plans, finishes, strict=True)):
            logprobs = None
            if width is not None:
                content = await _sliced(len(plan.pieces), partial(_chat_entries, plan, width))
                logprobs = ChatCompletionLogProbs(content=content)
            choices.append(
                ChatCompletionResponseChoice(
                    index=index,
                    message=_chat_message(plan),
                    logprobs=logprobs,
                    **self._finish(finish, plan, True),
                )
            )
        yield ChatCompletionResponse(
            id=response_id, created=created, model=self.model_id, choices=choices, usage=usage
        )

    def _chat_delta(self, plan: AnswerPlan, index: int) -> DeltaMessage:
        part = plan.kind_of(index)
        if part == "reasoning":
            return DeltaMessage(reasoning=plan.shown[index])
        if plan.kind != "tool_call":
            return DeltaMessage(content=plan.shown[index])
        if index == plan.reasoning_tokens:
            call = DeltaToolCall(
                index=0,
                id=plan.tool_call_id,
                type="function",
                function=DeltaFunctionCall(name=plan.tool_name, arguments=""),
            )
        elif part == "header":
            return DeltaMessage()
        else:
            call = DeltaToolCall(index=0, function=DeltaFunctionCall(arguments=plan.pieces[index]))
        return DeltaMessage(tool_calls=[call])

    def _prepare_chat(self, request: ChatCompletionRequest) -> tuple[list[int], list[AnswerPlan]]:
        tools = _tool_functions(request.tools)
        rendered = render_chat(list(request.messages), tools, _soft_tokens(request))
        check_modalities(self.model_spec, self.config.text_only, rendered.modalities)
        # vars(): reading the deprecated max_tokens attribute would log a warning per request.
        requested = request.max_completion_tokens or vars(request).get("max_tokens")
        max_tokens = resolve_max_tokens(
            requested, len(rendered.token_ids), self.config.max_model_len
        )
        tool_choice = request.tool_choice if tools else "none"
        spec = answer_spec(
            max_tokens=max_tokens,
            min_tokens=request.min_tokens,
            ignore_eos=request.ignore_eos,
            stop=request.stop,
            tools=tools,
            tool_choice=tool_choice,
            rendered=rendered,
            response_format=request.response_format,
            # Gemma 4's chat template thinks when asked to (the catalog's `thinking`)
            thinking=bool((request.chat_template_kwargs or {}).get("enable_thinking")),
        )
        return rendered.token_ids, self._plans(request, rendered.token_ids, spec)

    # ---- completions -----------------------------------------------------------------------
    def _prepare_completion(
        self, request: CompletionRequest
    ) -> tuple[list[list[int]], list[AnswerPlan]]:
        """Each prompt's token ids (a batch: vLLM 0.32 takes a list of prompts, each served
        as a request of its own), and every choice's plan, each prompt's n in turn."""
        prompts = [_prompt_ids(prompt) for prompt in _batch(request.prompt)]
        requested = 16 if request.max_tokens is None else request.max_tokens  # OpenAI's default
        if requested == 0 and request.echo:
            # vLLM's echo-only request (scoring a prompt): it generates one token, counted in
            # usage, and answers with the prompt alone (_completions)
            requested = 1
        elif requested < 1:  # vLLM's SamplingParams, in its words
            raise RequestError(f"max_tokens must be at least 1, got {requested}.", "max_tokens")
        plans: list[AnswerPlan] = []
        for ids in prompts:
            # each prompt is checked against the context on its own, as vLLM does
            max_tokens = resolve_max_tokens(requested, len(ids), self.config.max_model_len)
            spec = answer_spec(
                max_tokens=max_tokens,
                min_tokens=request.min_tokens,
                ignore_eos=request.ignore_eos,
                stop=request.stop,
                tools=[],
                tool_choice="none",
                rendered=None,
                response_format=request.response_format,
            )
            plans += self._plans(request, ids, spec)
        return prompts, plans

    async def _stream_tokens(
        self,
        traced: Span,
        events: AsyncGenerator[Any, None],
        prompt_tokens: int,
        include_usage: bool,
        chunk_type: Any,
        fields: dict[str, Any],
        choice_for: Callable[[Any], Any],
        chat_plans: dict[str, AnswerPlan] | None = None,
        opening: list[str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """One server-sent chunk per token event (of whichever choice made it, as vLLM sends
        them), then the usage chunk if asked (every choice's tokens; on chat, `chat_plans` by
        sequence id count the thinking among them), then [DONE]. `opening` (chat's role chunks)
        goes just before the first token's chunk. `usage` stays unset on token chunks: they
        serialise with exclude_unset, as vLLM's do."""
        made: dict[str, int] = {}
        cached = 0
        try:
            async with aclosing(events):
                async for event in events:
                    if opening and not made:
                        for sse in opening:
                            yield sse
                    made[event.request_id] = event.index + 1
                    cached = max(cached, event.num_cached_tokens)
                    chunk = chunk_type(**fields, model=self.model_id, choices=[choice_for(event)])
                    yield _sse(chunk)
        finally:  # also when the caller hangs up: the span says how far the stream got
            traced.set_attribute(names.OUTPUT_TOKENS, sum(made.values()))
        completion = sum(made.values())
        if include_usage:
            reasoning = None
            if chat_plans is not None:
                reasoning = sum(min(k, chat_plans[i].reasoning_tokens) for i, k in made.items())
            usage = self._usage(prompt_tokens, completion, cached, reasoning)
            yield _sse_usage(chunk_type(**fields, model=self.model_id, choices=[], usage=usage))
        yield "data: [DONE]\n\n"

    async def completions(  # type: ignore[override]
        self,
        request: CompletionRequest,
        raw_request_info: RawRequestInfo | None = None,
    ) -> AsyncGenerator[str | CompletionResponse | ErrorResponse, None]:
        traced = self._generate_span("text_completion", request, raw_request_info)
        async with aclosing(end_with(traced, self._completions(request, traced), _final)) as items:
            async for item in items:
                yield item

    async def _completions(
        self, request: CompletionRequest, traced: Span
    ) -> AsyncIterator[str | CompletionResponse | ErrorResponse]:
        try:
            prompts, plans = self._prepare_completion(request)
        except (RequestError, SchemaError) as exc:
            mark_failed(traced, str(exc))
            for item in _refusal(exc, request.stream):
                yield item
            return
        prompt_tokens = sum(map(len, prompts))  # usage counts each prompt once, echoed or not
        self._record_plans(traced, prompt_tokens, [p.finish_reason for p in plans])
        response_id = f"cmpl-{request.request_id}"
        created = int(time.time())
        events, choice_of = self._generate(request.request_id, prompts, plans)
        n = len(plans) // len(prompts)
        echoes = (
            [_echo(p, ids) for p, ids in zip(_batch(request.prompt), prompts, strict=True)]
            if request.echo
            else []
        )
        echo_only = bool(echoes) and request.max_tokens == 0
        # each choice's echo (prompt j's for choice j * n + i) and what its logprobs cover
        echo_of = [echoes[k // n] if echoes else None for k in range(len(plans))]
        scored = [
            _Scored.of(plan, echo, _logprobs_asked(request), echo_only)
            for plan, echo in zip(plans, echo_of, strict=True)
        ]
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)

            def choice(event: Any) -> CompletionResponseStreamChoice:
                index = choice_of[event.request_id]
                plan, echo = plans[index], echo_of[index]
                at = event.index
                fields: dict[str, Any] = {}
                if echo is None:
                    text, span = plan.shown[at], slice(at, at + 1)
                elif at == 0:
                    # vLLM's first chunk of an echoed choice: the prompt and the first token
                    # (the prompt alone when echo-only), with the prompt's ids
                    first = "" if echo_only else plan.shown[0]
                    text, span = echo.text + first, slice(0, len(echo.pieces) + (not echo_only))
                    fields["prompt_token_ids"] = echo.token_ids
                else:
                    lead = len(echo.pieces)
                    text, span = plan.shown[at], slice(lead + at, lead + at + 1)
                return CompletionResponseStreamChoice(
                    index=index,
                    text=text,
                    logprobs=scored[index].logprobs(span),
                    **fields,
                    **self._finish(plan.finish_reason, plan, event.finished),
                )

            tokens = self._stream_tokens(
                traced,
                events,
                prompt_tokens,
                include_usage,
                CompletionStreamResponse,
                {"id": response_id, "object": "text_completion", "created": created},
                choice,
            )
            async with aclosing(tokens):  # a caller that hangs up frees the sequences now
                async for sse in tokens:
                    yield sse
            return
        usage = await self._run_to_end(traced, events, prompt_tokens, plans, chat=False)
        choices = []
        for index, (plan, echo) in enumerate(zip(plans, echo_of, strict=True)):
            text = plan.text if echo is None else echo.text + ("" if echo_only else plan.text)
            logprobs, prompt_entries = await scored[index].whole()
            fields = {}
            if echo is not None and logprobs is not None:
                fields["prompt_logprobs"] = prompt_entries
            choices.append(
                CompletionResponseChoice(
                    index=index,
                    text=text,
                    logprobs=logprobs,
                    **fields,
                    **self._finish(plan.finish_reason, plan, True),
                )
            )
        yield CompletionResponse(
            id=response_id, created=created, model=self.model_id, choices=choices, usage=usage
        )

    # ---- unsupported endpoints ---------------------------------------------------------------
    async def embeddings(  # type: ignore[override]
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        yield _error(f"{self.model_id} (simulated Gemma 4) does not support embeddings")

    async def transcriptions(  # type: ignore[override]
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        yield _error(f"{self.model_id} (simulated Gemma 4) does not support transcriptions")

    async def score(
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        yield _error(f"{self.model_id} (simulated Gemma 4) does not support scoring")

    async def tokenize(
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[Any, None]:
        if hasattr(request, "messages"):
            # The prompt a chat request with these messages and tools gets (_prepare_chat),
            # so the count is that request's usage.prompt_tokens, as vLLM's is.
            tools = _tool_functions(request.tools)
            ids = render_chat(list(request.messages), tools, _soft_tokens(request)).token_ids
        else:
            ids = [tokenizer.BOS_ID, *tokenizer.encode(str(request.prompt))]
        yield TokenizeResponse(count=len(ids), max_model_len=self.config.max_model_len, tokens=ids)


def _logprobs_asked(request: ChatCompletionRequest | CompletionRequest) -> int | None:
    """The candidates a request asks for at each position (vLLM's SamplingParams.logprobs):
    chat's top_logprobs once logprobs is true, completions' logprobs; -1 means the whole
    vocabulary. None: no logprobs."""
    if isinstance(request, ChatCompletionRequest):
        asked = (request.top_logprobs or 0) if request.logprobs else None
    else:
        asked = request.logprobs
    return tokenizer.VOCAB_SIZE if asked == -1 else asked


def _check_logprobs(asked: int | None) -> None:
    """vLLM's engine bound (SamplingParams._validate_logprobs, max_logprobs 20), in its
    words; checked where it checks it, once generation has started."""
    if asked is not None and asked > MAX_LOGPROBS:
        raise EngineCheckError(
            f"Requested sample logprobs of {asked}, which is greater than max allowed: "
            f"{MAX_LOGPROBS} (parameter=logprobs, value={asked})",
            param="logprobs",
        )


# The tokens whose logprobs a whole answer builds between turns of the event loop. Ray Serve's
# health check of the replica waits on this loop, and a whole answer may hold 400,000 entries
# (the gateway's bound): eight answers of 336,000 built back to back held it for 36 s
# (in-process, 2 cores), and on the local fleet Serve restarted the replica after three missed
# 10 s checks. Sliced, the longest wait was 6 s, the garbage collector's full passes over the
# answers' objects, which vLLM's own whole answers cause too. 256 tokens x 21 entries: ~20 ms.
SLICE_TOKENS = 256


async def _sliced(count: int, build: Callable[[range], list[_T]]) -> list[_T]:
    """`build` over positions 0..count, a slice of SLICE_TOKENS at a time, letting the event
    loop run between slices."""
    out: list[_T] = []
    for start in range(0, count, SLICE_TOKENS):
        out += build(range(start, min(start + SLICE_TOKENS, count)))
        await asyncio.sleep(0)
    return out


def _chat_entries(plan: AnswerPlan, width: int, span: range) -> list[ChatCompletionLogProbsContent]:
    """vLLM's chat shape of the answer's tokens in `span`: per token its text, logprob, bytes
    and the first `width` candidates (the sampled token first: it is the most likely here)."""
    return [
        ChatCompletionLogProbsContent(
            token=p.token,
            logprob=p.logprob,
            bytes=token_bytes(p.token),
            top_logprobs=[
                ChatCompletionLogProb(token=t, logprob=lp, bytes=token_bytes(t))
                for t, lp in p.top[:width]
            ],
        )
        for p in answer_logprobs(plan.pieces, plan.token_ids, width, span)
    ]


@dataclass(frozen=True)
class _Echo:
    """A prompt as completions' `echo` repeats it (vLLM's serving layer): its text, a token-id
    prompt's decoded (special tokens included, as vLLM's detokenizer gives them), and its
    tokens' text and ids, which its logprobs cover."""

    text: str
    pieces: list[str]
    token_ids: list[int]


def _echo(prompt: Any, ids: list[int]) -> _Echo:
    """The echo of one prompt of a batch, whose token ids (_prompt_ids) are `ids`."""
    if isinstance(prompt, str):  # its ids are BOS and its pieces'
        return _Echo(prompt, [tokenizer.decode_id(ids[0]), *tokenizer.pieces(prompt)], ids)
    pieces = [tokenizer.decode_id(token) for token in ids]
    return _Echo("".join(pieces), pieces, ids)


@dataclass(frozen=True)
class _Scored:
    """A completion choice's logprobs, when asked for (`asked`; None: not asked): the echoed
    prompt's positions (the first has none), then the answer's, computed for the tokens a chunk
    or an answer holds; each token's text, and its offset as vLLM counts it, over the tokens'
    text (so a text prompt's BOS, "<bos>", shifts the offsets past it, though the echoed text
    does not hold it)."""

    asked: int | None
    plan: AnswerPlan
    echo: _Echo | None
    tokens: list[str]
    offsets: list[int]

    @classmethod
    def of(
        cls, plan: AnswerPlan, echo: _Echo | None, asked: int | None, echo_only: bool
    ) -> _Scored:
        tokens: list[str] = []
        if asked is not None:
            tokens += echo.pieces if echo is not None else []
            tokens += [] if echo_only else plan.pieces
        return cls(asked, plan, echo, tokens, _text_offsets(tokens))

    def positions(self, span: range) -> list[Position | None]:
        """The positions of the tokens in `span` (of `tokens`: the prompt's, then the
        answer's)."""
        asked = self.asked or 0
        lead = len(self.echo.pieces) if self.echo is not None else 0
        out: list[Position | None] = []
        if self.echo is not None and span.start < lead:
            prompt = range(span.start, min(span.stop, lead))
            out += prompt_logprobs(self.echo.pieces, self.echo.token_ids, asked, prompt)
        if span.stop > lead:
            answer = range(max(span.start, lead) - lead, span.stop - lead)
            out += answer_logprobs(self.plan.pieces, self.plan.token_ids, asked, answer)
        return out

    def logprobs(self, span: slice) -> CompletionLogProbs | None:
        """vLLM's completions shape for the tokens in `span` (a stream's chunk)."""
        if self.asked is None:
            return None
        return self._shape(span, self.positions(range(*span.indices(len(self.tokens)))))

    async def whole(self) -> tuple[CompletionLogProbs | None, list[dict[int, Logprob] | None]]:
        """A whole answer's logprobs and, when its prompt is echoed, vLLM's `prompt_logprobs`
        (else []), built a slice at a time (_sliced)."""
        if self.asked is None:
            return None, []
        positions = await _sliced(len(self.tokens), self.positions)
        prompt: list[dict[int, Logprob] | None] = []
        if self.echo is not None:
            entries = partial(_prompt_entries, self.echo, positions)
            prompt = await _sliced(len(self.echo.pieces), entries)
        return self._shape(slice(None), positions), prompt

    def _shape(self, span: slice, positions: list[Position | None]) -> CompletionLogProbs:
        """Parallel lists of tokens, their logprobs, their candidates (token -> logprob: every
        one a position holds, vLLM's first `logprobs` + 1) and offsets; None where nothing
        precedes a prompt's first."""
        return CompletionLogProbs(
            text_offset=self.offsets[span],
            token_logprobs=[None if p is None else p.logprob for p in positions],
            tokens=self.tokens[span],
            top_logprobs=[None if p is None else dict(p.top) for p in positions],
        )


def _prompt_entries(
    echo: _Echo, positions: list[Position | None], span: range
) -> list[dict[int, Logprob] | None]:
    """vLLM's `prompt_logprobs` of an echoed prompt's tokens in `span` (echo with logprobs,
    not streamed), from the choice's `positions`: per prompt token, None for the first, else
    the token's id and its alternatives' -> logprob, rank and text."""
    out: list[dict[int, Logprob] | None] = []
    for at in span:
        position = positions[at]
        if position is None:
            out.append(None)
            continue
        entry = {echo.token_ids[at]: Logprob(position.logprob, position.rank, position.token)}
        for rank, (word, value) in enumerate(position.top[1:], start=1):
            entry.setdefault(tokenizer.token_id(word), Logprob(value, rank, word))
        out.append(entry)
    return out


def _text_offsets(pieces: list[str]) -> list[int]:
    """Where each token starts in the text (vLLM's text_offset: the lengths before it)."""
    return [0, *itertools.accumulate(len(p) for p in pieces[:-1])] if pieces else []


def _check_logit_bias(logit_bias: dict[str, float] | None) -> None:
    """Refuse token ids outside the vocabulary as vLLM 0.32 does (SamplingParams.
    _validate_logit_bias, a VLLMValidationError rendered by create_error_response): a 400
    naming `logit_bias`, in its words, with the ids in the request's order. Keys that are
    not integers are refused first, as vLLM's SamplingParams.from_optional does."""
    ids: list[int] = []
    keys: list[str] = []
    for token in logit_bias or {}:
        try:
            ids.append(int(token))
        except (ValueError, TypeError):
            keys.append(token)
    if keys:  # vLLM's frontend: a 400, streamed or not
        raise RequestError(
            "logit_bias contains key(s) that cannot be converted to integer token IDs: "
            f"{keys!r} (parameter=logit_bias, value={keys})",
            param="logit_bias",
        )
    invalid = [t for t in ids if not 0 <= t < tokenizer.VOCAB_SIZE]
    if invalid:
        raise EngineCheckError(
            f"token_id(s) {invalid} in logit_bias contain out-of-vocab token ids. "
            f"Vocabulary size: {tokenizer.VOCAB_SIZE} (parameter=logit_bias, value={invalid})",
            param="logit_bias",
        )


def _batch(prompt: Any) -> list[Any]:
    """A completion's prompts: vLLM takes a string, a list of token ids, or a list of either
    (a batch, answered prompt by prompt)."""
    if prompt == []:  # vLLM's renderer, before anything is generated
        raise RequestError("You must pass at least one prompt")
    if isinstance(prompt, list) and isinstance(prompt[0], str | list):
        return list(prompt)
    return [prompt]


def _prompt_ids(prompt: Any) -> list[int]:
    """One prompt's token ids: a string's, with the BOS token, or the ids given (as they
    are: vLLM adds nothing to a token-id prompt). Refused as vLLM 0.32's engine refuses them
    (InputProcessor._validate_model_input: 400, no param; in a stream, its error event): an
    empty one, and one holding an id outside the vocabulary (the largest, as vLLM names it)."""
    if isinstance(prompt, str):
        return [tokenizer.BOS_ID, *tokenizer.encode(prompt)]
    if not isinstance(prompt, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in prompt
    ):
        raise RequestError("prompt must be a string or a list of token ids", param="prompt")
    if not prompt:
        raise EngineCheckError("The decoder prompt cannot be empty")
    if min(prompt) < 0:
        raise EngineCheckError(f"Token id {min(prompt)} is out of vocabulary")
    if max(prompt) >= tokenizer.VOCAB_SIZE:
        raise EngineCheckError(f"Token id {max(prompt)} is out of vocabulary")
    return list(prompt)


def _tool_functions(tools: list[Any] | None) -> list[dict[str, Any]]:
    return [t.function.model_dump(exclude_none=True) for t in (tools or [])]


def _soft_tokens(request: Any) -> int:
    """Soft tokens per image: the request's mm_processor_kwargs, else Gemma 4's default."""
    mm_kwargs = getattr(request, "mm_processor_kwargs", None) or {}
    return int(mm_kwargs.get("max_soft_tokens", load_catalog().family.image_soft_tokens_default))


def _chat_message(plan: AnswerPlan) -> ChatMessage:
    """The whole message of one choice: its text, or its tool call, after any reasoning."""
    if plan.kind == "tool_call" and plan.tool_name is not None:
        return ChatMessage(
            role="assistant",
            content="",
            reasoning=plan.reasoning,
            tool_calls=[
                ToolCall(
                    id=plan.tool_call_id,
                    function=FunctionCall(name=plan.tool_name, arguments=plan.text),
                )
            ],
        )
    # vLLM's reasoning parser leaves no content when the tokens ran out while thinking
    content = plan.text if plan.text or plan.reasoning is None else None
    return ChatMessage(role="assistant", content=content, reasoning=plan.reasoning)


def simulator_llm_config(
    name: str,
    config: SimulatorConfig,
    *,
    placement_group_config: dict[str, Any] | None = None,
    deployment_config: dict[str, Any] | None = None,
    accelerator_type: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    **llm_config_fields: Any,
) -> LLMConfig:
    """An LLMConfig that serves `config` as model id `name` with the simulator engine.

    `placement_group_config` and `deployment_config` pass through unchanged (the fleet builder
    sets logical-GPU bundles and replicas there). Without a placement group, a replica takes
    one CPU bundle and nothing else: the simulator needs no GPU.
    """
    if placement_group_config is None:
        placement_group_config = {"bundles": [{"CPU": 1}], "strategy": "PACK"}
        deployment_config = dict(deployment_config or {})
        actor = dict(deployment_config.get("ray_actor_options") or {})
        actor.setdefault("num_cpus", 0)  # the replica shares the engine's CPU bundle
        deployment_config["ray_actor_options"] = actor
        if accelerator_type is None:  # Ray Serve LLM refuses an accelerator_type on CPU
            llm_config_fields.setdefault("accelerator_config", {"kind": "cpu"})
    experimental = dict(llm_config_fields.pop("experimental_configs", {}) or {})
    experimental[EXPERIMENTAL_CONFIG_KEY] = config.model_dump(mode="json")
    engine_kwargs = {
        # Mirrors for Ray Serve LLM's own bookkeeping (model card, bundle_per_worker x tp);
        # the SimulatorConfig is the source of truth.
        "tensor_parallel_size": config.tp,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "max_num_batched_tokens": config.max_num_batched_tokens,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        "enable_prefix_caching": config.enable_prefix_caching,
    }
    from gemma_fleet.deployments.engines.server import PoolServer

    llm_config_fields.setdefault("server_cls", PoolServer)
    return LLMConfig(
        model_loading_config={"model_id": name},
        engine_kwargs=engine_kwargs,
        experimental_configs=experimental,
        placement_group_config=placement_group_config,
        deployment_config=deployment_config or {},
        accelerator_type=accelerator_type,
        runtime_env=runtime_env,
        **llm_config_fields,
    )


def simulator_bind_kwargs() -> dict[str, Any]:
    """bind_kwargs for build_llm_deployment: inject the simulator as LLMServer's engine."""
    return {"engine_cls": SimulatorEngine}
