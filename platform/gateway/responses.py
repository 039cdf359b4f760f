"""OpenAI Responses on top of the chat core: a request is translated to OpenAI chat, the answer
and its stream back to Responses' output items and events, so clients written for the
Responses API (the OpenAI SDK's `client.responses`, agent frameworks) reach the same pools with
the same routing, limits and accounting as chat."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.openai_models import ChatCompletionRequest
from gemma_fleet.gateway.responses_models import (
    Conversation,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputAudioPart,
    InputFile,
    InputImage,
    InputText,
    InputTokensRequest,
    MessageItem,
    OutputText,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    TextFormatJsonObject,
    TextFormatJsonSchema,
)
from gemma_fleet.gateway.translation import ORIGIN, chat_chunks, chat_tool, validated_chat

# Efforts that ask a reasoning model to think; Gemma 4 thinks or does not (enable_thinking).
THINKING_EFFORTS = {"low", "medium", "high", "xhigh"}
# The `include` entry that asks for the answer's logprobs (top_logprobs >= 1 does too).
LOGPROBS_INCLUDE = "message.output_text.logprobs"


def _part(part: Any, where: str) -> dict[str, Any]:
    """An input content part as an OpenAI chat content part."""
    if isinstance(part, InputText | OutputText):
        return {"type": "text", "text": part.text}
    if isinstance(part, Refusal):
        return {"type": "text", "text": part.refusal}
    if isinstance(part, InputImage):
        if part.image_url is None:
            raise ApiError(400, f"{where}: an input_image needs image_url", param=where)
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image, ORIGIN: where}
    if isinstance(part, InputAudioPart):
        return {"type": "input_audio", "input_audio": part.input_audio.model_dump(), ORIGIN: where}
    assert isinstance(part, InputFile)
    if part.file_id is not None or (part.file_data is None) == (part.file_url is None):
        why = (
            "files from OpenAI's Files API are not supported (this gateway keeps no files)"
            if part.file_id is not None
            else "an input_file takes file_data or file_url, one of the two"
        )
        raise ApiError(
            400,
            f"{where}: {why}; send the PDF itself as file_data or file_url, or the file's text "
            "as input_text",
            param=where,
        )
    file = {"file_data": part.file_data} if part.file_url is None else {"file_url": part.file_url}
    if part.filename is not None:
        file["filename"] = part.filename
    return {"type": "file", "file": file, ORIGIN: where}


def _text_only(parts: list[dict[str, Any]], where: str, role: str) -> str:
    if any(p["type"] != "text" for p in parts):
        raise ApiError(400, f"{where}: {role} messages take text only", param=where)
    return "".join(p["text"] for p in parts)


def _messages(req: Conversation) -> list[dict[str, Any]]:
    """The chat messages: instructions as the system turn, then the input items in order.
    A model's function calls (and its reasoning) join the assistant turn they belong to; each
    call's output becomes a tool message, and the images the outputs returned open the user
    turn after them (a turn of their own if none follows), as for Anthropic's tool results:
    the chat core's tool messages carry text only."""
    messages: list[dict[str, Any]] = []
    if req.instructions:
        messages.append({"role": "system", "content": req.instructions})
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input})
        return messages

    def assistant() -> dict[str, Any]:
        """The assistant turn being built: the last message if it is one, else a new one."""
        if not messages or messages[-1]["role"] != "assistant":
            messages.append({"role": "assistant", "content": None})
        return messages[-1]

    pending_images: list[dict[str, Any]] = []
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        is_user = isinstance(item, MessageItem) and item.role == "user"
        if pending_images and not is_user and not isinstance(item, FunctionCallOutputItem):
            # Images the tools returned, in a turn of their own before the model goes on.
            messages.append({"role": "user", "content": pending_images})
            pending_images = []
        if isinstance(item, MessageItem):
            if isinstance(item.content, str):
                parts = [{"type": "text", "text": item.content}]
            else:
                parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(item.content)]
            if item.role == "assistant":
                turn = assistant()
                turn["content"] = (turn["content"] or "") + _text_only(parts, where, "assistant")
            elif item.role in ("system", "developer"):
                messages.append({"role": "system", "content": _text_only(parts, where, item.role)})
            else:
                messages.append({"role": "user", "content": pending_images + parts})
                pending_images = []
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            assistant().setdefault("tool_calls", []).append(call)
        elif isinstance(item, FunctionCallOutputItem):
            if isinstance(item.output, str):
                text = item.output
            else:
                parts = [_part(p, f"{where}.output[{j}]") for j, p in enumerate(item.output)]
                text = "".join(p["text"] for p in parts if p["type"] == "text")
                pending_images += [p for p in parts if p["type"] != "text"]
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": text})
        elif isinstance(item, ReasoningItem):
            thought = "".join(c.text for c in item.content or [])
            if thought:
                turn = assistant()
                turn["reasoning"] = turn.get("reasoning", "") + thought
    if pending_images:
        messages.append({"role": "user", "content": pending_images})
    return messages


def _conversation(req: Conversation) -> dict[str, Any]:
    """The chat request fields that decide the prompt (messages, tools, template flags) and
    the pool (those, and the output format, which needs structured output)."""
    body: dict[str, Any] = {"model": req.model, "messages": _messages(req)}
    if req.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.tools:
        body["tools"] = [
            chat_tool(
                t.name, t.description, {"type": "object"} if t.parameters is None else t.parameters
            )
            for t in req.tools
        ]
    if req.tool_choice is not None:
        choice = req.tool_choice
        body["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "function": {"name": choice.name}}
        )
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, TextFormatJsonSchema):
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": fmt.name, "schema": fmt.schema_},
        }
    elif isinstance(fmt, TextFormatJsonObject):
        body["response_format"] = {"type": "json_object"}
    if req.reasoning is not None and req.reasoning.effort in THINKING_EFFORTS:
        body["chat_template_kwargs"] = {"enable_thinking": True}
    return body


def to_chat_request(req: ResponsesRequest) -> ChatCompletionRequest:
    """The OpenAI chat request that asks the same of a pool."""
    body = _conversation(req)
    body["stream"] = req.stream
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    for name in ("temperature", "top_p"):
        if (value := getattr(req, name)) is not None:
            body[name] = value
    if req.top_logprobs or LOGPROBS_INCLUDE in (req.include or []):
        body["logprobs"] = True
        body["top_logprobs"] = req.top_logprobs or 0
    return validated_chat(body)


def to_count_request(req: InputTokensRequest) -> ChatCompletionRequest:
    """The chat request whose prompt is the one `req` counts, built as to_chat_request builds
    it, so the engine renders the very prompt a generation gets."""
    return validated_chat(_conversation(req))


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    # vLLM counts the thinking among the completion tokens, and apart when its reasoning parser
    # is on (the fleet's engines run Gemma 4's).
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        # Prefix-cache hits are counted by vLLM; nothing is written to a cache a client pays for.
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion,
    }


def _item_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponseShell:
    """The fields of a Response object that echo the request, shared by the answer and the
    stream's events."""

    def __init__(self, req: ResponsesRequest, model: str) -> None:
        self.id = _item_id("resp")
        self.created_at = int(time.time())
        self.req = req
        self.model = model

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        req = self.req
        choice = req.tool_choice
        fmt = req.text.format if req.text is not None else None
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "model": self.model,
            "output": output,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_logprobs": req.top_logprobs,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "tool_choice": (
                choice.model_dump()
                if choice is not None and not isinstance(choice, str)
                else (choice or "auto")
            ),
            "tools": [t.model_dump() for t in req.tools or []],
            "text": {"format": fmt.model_dump(by_alias=True) if fmt else {"type": "text"}},
            "reasoning": {"effort": req.reasoning.effort if req.reasoning else None},
            "metadata": req.metadata or {},
            "store": False,
            "previous_response_id": None,
            "error": error,
            # Running out of tokens is the one way an answer ends incomplete here.
            "incomplete_details": (
                {"reason": "max_output_tokens"} if status == "incomplete" else None
            ),
            "usage": usage,
        }


def _logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat logprobs entries as output_text logprobs (the same keys)."""
    return [
        {
            "token": e["token"],
            "logprob": e["logprob"],
            "bytes": e.get("bytes") or list(e["token"].encode()),
            "top_logprobs": [
                {"token": t["token"], "logprob": t["logprob"], "bytes": t.get("bytes") or []}
                for t in e.get("top_logprobs") or []
            ],
        }
        for e in entries or []
    ]


# The delta and done events of the items that carry text, by kind.
TEXT_EVENTS = {
    "reasoning": ("response.reasoning_text.delta", "response.reasoning_text.done"),
    "message": ("response.output_text.delta", "response.output_text.done"),
}


def _text_part(kind: str, text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The content part of a reasoning item or an answer message."""
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def _text_item(kind: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """A reasoning item (no status in Responses' shape) or an answer message."""
    if kind == "reasoning":
        return {"type": "reasoning", "id": _item_id("rs"), "summary": [], "content": content}
    return {
        "type": "message",
        "id": _item_id("msg"),
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _call_item(call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": _item_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def to_response(chat: dict[str, Any], req: ResponsesRequest, model: str) -> dict[str, Any]:
    """An OpenAI chat completion as a Response object."""
    choice = chat["choices"][0]
    message = choice.get("message") or {}
    incomplete = choice.get("finish_reason") == "length"
    status = "incomplete" if incomplete else "completed"
    output: list[dict[str, Any]] = []
    if thought := message.get("reasoning") or message.get("reasoning_content"):
        output.append(_text_item("reasoning", [_text_part("reasoning", thought, [])], status))
    if message.get("content"):
        logprobs = _logprobs((choice.get("logprobs") or {}).get("content"))
        part = _text_part("message", message["content"], logprobs)
        output.append(_text_item("message", [part], status))
    for call in message.get("tool_calls") or []:
        function = call["function"]
        output.append(
            _call_item(call["id"], function["name"], function.get("arguments") or "", status)
        )
    shell = ResponseShell(req, model)
    return shell.response(status, output, _usage(chat.get("usage")))


class _OpenItem:
    """An output item being streamed: its place, its id and what has arrived so far."""

    def __init__(self, kind: str, index: int, item: dict[str, Any]) -> None:
        self.kind = kind  # "reasoning", "message", or "call" + the call's index
        self.index = index
        self.item = item
        self.text = ""
        self.logprobs: list[dict[str, Any]] = []


class _ResponseStream:
    """Responses' streaming events for OpenAI chat chunks, numbered in order."""

    def __init__(self, shell: ResponseShell) -> None:
        self.shell = shell
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open_item: _OpenItem | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None

    def event(self, kind: str, **data: Any) -> str:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

    def open(self, kind: str, item: dict[str, Any]) -> list[str]:
        events = self.close()
        self.open_item = _OpenItem(kind, len(self.output), item)
        events.append(
            self.event("response.output_item.added", output_index=len(self.output), item=item)
        )
        if kind in TEXT_EVENTS:
            part = _text_part(kind, "", [])
            events.append(
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=self.open_item.index,
                    content_index=0,
                    part=part,
                )
            )
        return events

    def close(self, status: str = "completed") -> list[str]:
        current = self.open_item
        if current is None:
            return []
        self.open_item = None
        item = current.item
        where = {"item_id": item["id"], "output_index": current.index}
        events = []
        if current.kind not in TEXT_EVENTS:  # a function call
            item["status"] = status
            events.append(
                self.event(
                    "response.function_call_arguments.done",
                    **where,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        else:
            _, done = TEXT_EVENTS[current.kind]
            part = _text_part(current.kind, current.text, current.logprobs)
            text_done: dict[str, Any] = {"text": current.text}
            if current.kind == "message":
                text_done["logprobs"] = current.logprobs
                item["status"] = status
            events.append(self.event(done, **where, content_index=0, **text_done))
            events.append(
                self.event("response.content_part.done", **where, content_index=0, part=part)
            )
            item["content"] = [part]
        self.output.append(item)
        events.append(
            self.event("response.output_item.done", output_index=current.index, item=item)
        )
        return events

    def _text(self, kind: str, text: str, logprobs: list[dict[str, Any]]) -> list[str]:
        events: list[str] = []
        if self.open_item is None or self.open_item.kind != kind:
            events += self.open(kind, _text_item(kind, [], "in_progress"))
        current = self.open_item
        assert current is not None
        current.text += text
        current.logprobs += logprobs
        delta, _ = TEXT_EVENTS[kind]
        extra: dict[str, Any] = {"logprobs": logprobs} if kind == "message" else {}
        events.append(
            self.event(
                delta,
                item_id=current.item["id"],
                output_index=current.index,
                content_index=0,
                delta=text,
                **extra,
            )
        )
        return events

    def _call(self, call: dict[str, Any]) -> list[str]:
        events: list[str] = []
        kind = f"call{call.get('index', 0)}"
        function = call.get("function") or {}
        if self.open_item is None or self.open_item.kind != kind:
            item = _call_item(
                call.get("id") or _item_id("call"), function.get("name", ""), "", "in_progress"
            )
            events += self.open(kind, item)
        current = self.open_item
        assert current is not None
        if args := function.get("arguments"):
            current.item["arguments"] += args
            events.append(
                self.event(
                    "response.function_call_arguments.delta",
                    item_id=current.item["id"],
                    output_index=current.index,
                    delta=args,
                )
            )
        return events

    def chunk(self, chunk: dict[str, Any]) -> list[str]:
        events: list[str] = []
        if usage := chunk.get("usage"):
            self.usage = usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if thought := delta.get("reasoning") or delta.get("reasoning_content"):
                events += self._text("reasoning", thought, [])
            if text := delta.get("content"):
                logprobs = _logprobs((choice.get("logprobs") or {}).get("content"))
                events += self._text("message", text, logprobs)
            for call in delta.get("tool_calls") or []:
                events += self._call(call)
            if reason := choice.get("finish_reason"):
                self.finish_reason = reason
        return events


async def to_response_stream(
    openai_events: AsyncIterator[str], req: ResponsesRequest, model: str
) -> AsyncIterator[str]:
    """Responses' streaming events for an OpenAI chat stream: created and in_progress, each
    output item added, its deltas and done, then completed (incomplete when the answer ran
    out of max_output_tokens, failed when the pool failed mid-answer)."""
    shell = ResponseShell(req, model)
    state = _ResponseStream(shell)
    yield state.event("response.created", response=shell.response("in_progress", []))
    yield state.event("response.in_progress", response=shell.response("in_progress", []))
    async for chunk in chat_chunks(openai_events):
        if "error" in chunk:
            for event in state.close("incomplete"):
                yield event
            error = {"code": "server_error", "message": chunk["error"]["message"]}
            failed = shell.response("failed", state.output, _usage(state.usage), error=error)
            yield state.event("response.failed", response=failed)
            return
        for event in state.chunk(chunk):
            yield event
    status = "incomplete" if state.finish_reason == "length" else "completed"
    for event in state.close(status):
        yield event
    final = shell.response(status, state.output, _usage(state.usage))
    yield state.event(f"response.{status}", response=final)
