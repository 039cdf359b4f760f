"""Anthropic Messages on top of the chat core: requests are translated to OpenAI chat, answers
and streams back to Anthropic's shapes, so agents that speak Messages reach the same pools with
the same routing."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from gemma_fleet.gateway.anthropic_models import (
    ContentSource,
    Conversation,
    CountTokensRequest,
    DocumentBlock,
    ImageBlock,
    MessagesRequest,
    PdfBase64Source,
    PdfUrlSource,
    PlainTextSource,
    RedactedThinkingBlock,
    SearchResultBlock,
    TextBlock,
    ThinkingBlock,
    ThinkingDisabled,
    ToolResultBlock,
    ToolUseBlock,
)
from gemma_fleet.gateway.bodies import parse
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.openai_models import ChatCompletionRequest
from gemma_fleet.gateway.translation import ORIGIN, chat_chunks, chat_tool, validated_chat

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def stop_fields(
    finish_reason: str | None, matched: object, used_tool: bool
) -> dict[str, str | None]:
    """Anthropic's stop_reason and stop_sequence for an OpenAI choice's finish_reason and
    vLLM's stop_reason (the stop string that ended the text; an int is a stop token id, not a
    sequence the client gave). A forced call (a named tool, or `any`) finishes with "stop" in
    OpenAI's API and vLLM's, yet Anthropic says "tool_use" whenever the turn ends in a tool
    call; only running out of tokens says otherwise."""
    reason = finish_reason or "stop"
    if used_tool and reason != "length":
        return {"stop_reason": "tool_use", "stop_sequence": None}
    if reason == "stop" and isinstance(matched, str):
        return {"stop_reason": "stop_sequence", "stop_sequence": matched}
    return {"stop_reason": STOP_REASONS.get(reason, "end_turn"), "stop_sequence": None}


def _image_url(block: ImageBlock) -> str:
    source = block.source
    if source.type == "base64":
        return f"data:{source.media_type};base64,{source.data}"
    return source.url


def _part(block: TextBlock | ImageBlock, where: str) -> dict[str, Any]:
    """A text or image block as an OpenAI content part; an image keeps `where`, its place in
    the caller's request, for the errors about it."""
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    return {"type": "image_url", "image_url": {"url": _image_url(block)}, ORIGIN: where}


def _text(blocks: str | list[TextBlock]) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(b.text for b in blocks)


def _tool_result(block: ToolResultBlock, where: str) -> tuple[str, list[dict[str, Any]]]:
    """A tool result as the tool message's text and the media it returned. The media go into
    the user turn that follows the tool's response: the chat core's tool messages carry text
    only (as OpenAI's do), while Gemma 4's template and vLLM 0.32 would also take them inside
    the response (docs/gateway.md). A document of text stays in the response; one with
    pictures, or a PDF (read into pages of text and pictures), goes to that turn whole,
    inside its tags, rather than leaving its tags empty in the response."""
    content = block.content
    texts: list[str] = [content] if isinstance(content, str) else []
    media: list[dict[str, Any]] = []
    for k, item in enumerate([] if isinstance(content, str) else content):
        if isinstance(item, DocumentBlock):
            parts = _document(item, f"{where}.content[{k}]")
            if any(p["type"] != "text" for p in parts):
                media += parts
                continue
        elif isinstance(item, SearchResultBlock):
            parts = [_search_result(item)]
        else:
            parts = [_part(item, f"{where}.content[{k}]")]
        texts += [p["text"] for p in parts if p["type"] == "text"]
        media += [p for p in parts if p["type"] != "text"]
    text = "".join(texts)
    return (f"error: {text}" if block.is_error else text), media


def _document(block: DocumentBlock, where: str) -> list[dict[str, Any]]:
    """A document as parts of the user's turn: its text (or its text and images, or a PDF the
    gateway reads into pages of text and pictures) inside <document> tags, with its title and
    context, so the model can tell the document from the question around it and knows what it
    is. The gateway keeps no uploaded files: those are refused, naming the block, with what
    to send instead."""
    source = block.source
    if isinstance(source, PlainTextSource):
        body: list[dict[str, Any]] = [{"type": "text", "text": source.data}]
    elif isinstance(source, ContentSource):
        blocks = source.content
        if isinstance(blocks, str):
            body = [{"type": "text", "text": blocks}]
        else:
            body = [_part(b, f"{where}.source.content[{k}]") for k, b in enumerate(blocks)]
    elif isinstance(source, PdfBase64Source):
        file_data = f"data:{source.media_type};base64,{source.data}"
        body = [{"type": "file", "file": {"file_data": file_data}, ORIGIN: where}]
    elif isinstance(source, PdfUrlSource):
        body = [{"type": "file", "file": {"file_url": source.url}, ORIGIN: where}]
    else:
        raise ApiError(
            400,
            f"{where}: a document from Anthropic's Files API (source type file): this gateway "
            "keeps no files; send the PDF itself (source type base64 or url) or its text (a "
            'document with source type "text", or a text block)',
            param=where,
        )
    head = "<document>\n"
    if block.title:
        head += f"<title>{block.title}</title>\n"
    if block.context:
        head += f"<context>{block.context}</context>\n"
    end = {"type": "text", "text": "\n</document_content>\n</document>"}
    return [{"type": "text", "text": head + "<document_content>\n"}, *body, end]


def _search_result(block: SearchResultBlock) -> dict[str, Any]:
    """A search result as one text part of the turn: its passages inside <search_result>
    tags with its source and title, so the model can tell them from the question and say
    where an answer comes from (answers carry no structured citations: docs/gateway.md).
    Passages are separate blocks of the result: a blank line keeps them apart."""
    passages = "\n\n".join(b.text for b in block.content)
    head = f"<search_result>\n<source>{block.source}</source>\n<title>{block.title}</title>\n"
    body = f"<search_result_content>\n{passages}\n</search_result_content>\n</search_result>"
    return {"type": "text", "text": head + body}


def parse_messages(raw: dict[str, Any]) -> MessagesRequest:
    """A Messages request, refusing server-held conversation state (`thread`) the way
    Anthropic's SDKs understand: the tool runner sends `thread` and, told it cannot be threaded
    (`thread_unsupported_request`), sends the whole conversation without it from then on."""
    if raw.get("thread") is not None:
        raise ApiError(
            400,
            "thread is not served by this gateway: it keeps no conversation state; send the "
            "whole conversation in messages",
            param="thread",
            details={"error_code": "thread_unsupported_request", "unsupported": ["thread"]},
        )
    return parse(MessagesRequest, raw)


def to_chat_request(req: MessagesRequest) -> ChatCompletionRequest:
    """The OpenAI chat request that asks the same of a pool."""
    body = _conversation(req)
    body["max_tokens"] = req.max_tokens
    body["stream"] = req.stream
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("stop", "stop_sequences"),
    ):
        value = getattr(req, theirs)
        if value is not None:
            body[ours] = value
    return validated_chat(body)


def to_count_request(req: CountTokensRequest) -> ChatCompletionRequest:
    """The OpenAI chat request whose prompt is the one `req` counts: built as
    to_chat_request builds it, so the engine renders the very prompt a generation gets."""
    return validated_chat(_conversation(req))


def _conversation(req: Conversation) -> dict[str, Any]:
    """The chat request fields that decide the prompt (messages, tools, template flags) and
    the pool (those, and the output format, which needs structured output)."""
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": _text(req.system)})
    for i, message in enumerate(req.messages):
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        thoughts: list[str] = []
        for j, block in enumerate(message.content):
            if isinstance(block, ThinkingBlock) and message.role == "assistant":
                thoughts.append(block.thinking)
            elif isinstance(block, RedactedThinkingBlock) and message.role == "assistant":
                continue
            elif isinstance(block, TextBlock | ImageBlock):
                parts.append(_part(block, f"messages[{i}].content[{j}]"))
            elif isinstance(block, DocumentBlock) and message.role == "user":
                parts += _document(block, f"messages[{i}].content[{j}]")
            elif isinstance(block, SearchResultBlock) and message.role == "user":
                parts.append(_search_result(block))
            elif isinstance(block, ToolResultBlock) and message.role == "user":
                content, images = _tool_result(block, f"messages[{i}].content[{j}]")
                messages.append(
                    {"role": "tool", "tool_call_id": block.tool_use_id, "content": content}
                )
                parts += images
            elif isinstance(block, ToolUseBlock) and message.role == "assistant":
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": json.dumps(block.input)},
                    }
                )
            else:
                raise ApiError(
                    400,
                    f"a {block.type} block cannot appear in a {message.role} message",
                    param=f"messages[{i}].content",
                )
        if message.role == "assistant":
            text = "".join(p["text"] for p in parts if p["type"] == "text")
            entry: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                entry["tool_calls"] = calls
            if thoughts:
                entry["reasoning"] = "".join(thoughts)
            messages.append(entry)
        elif parts:
            messages.append({"role": "user", "content": parts})

    body: dict[str, Any] = {"model": req.model, "messages": messages}
    if req.tools:
        body["tools"] = [chat_tool(t.name, t.description, t.input_schema) for t in req.tools]
    if req.thinking is not None and not isinstance(req.thinking, ThinkingDisabled):
        body["chat_template_kwargs"] = {"enable_thinking": True}
    if req.output_config is not None and req.output_config.format is not None:
        # The name is OpenAI's label for the schema; engines compile only the schema.
        schema = req.output_config.format.schema_
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    if req.messages[-1].role == "assistant":
        # A prefill: the answer continues the assistant's text rather than starting a turn.
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    if req.tool_choice is not None:
        choice = req.tool_choice
        if choice.disable_parallel_tool_use is not None:
            body["parallel_tool_calls"] = not choice.disable_parallel_tool_use
        if choice.type == "tool":
            if not choice.name:
                raise ApiError(400, "tool_choice of type tool needs a name", param="tool_choice")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    return body


def _arguments(text: str | None) -> dict[str, Any]:
    """A call's arguments as Anthropic's `input` object. A call cut short by max_tokens has
    arguments that do not parse: the client learns it from stop_reason, not from a 500."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _reasoning(message: dict[str, Any]) -> str | None:
    """The thinking in an OpenAI message or delta: vLLM's reasoning parser puts it in
    `reasoning` (older versions: `reasoning_content`)."""
    return message.get("reasoning") or message.get("reasoning_content")


def to_message(chat: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion as an Anthropic message."""
    choice = chat["choices"][0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if thought := _reasoning(message):
        # Gemma's thinking, unsigned: the signature only Anthropic's models can make is empty.
        content.append({"type": "thinking", "thinking": thought, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call["function"]
        content.append(
            {
                "type": "tool_use",
                "id": call["id"],
                "name": function["name"],
                "input": _arguments(function.get("arguments")),
            }
        )
    usage = chat.get("usage") or {}
    return {
        "id": f"msg_{chat.get('id') or uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        **stop_fields(
            choice.get("finish_reason"), choice.get("stop_reason"), bool(message.get("tool_calls"))
        ),
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


class _StreamState:
    """Anthropic's content blocks, opened and closed as OpenAI deltas arrive."""

    def __init__(self) -> None:
        self.index = -1
        self.open_kind: str | None = None  # "thinking", "text" or "tool" + the call's index
        self.finish_reason: str | None = None
        self.matched: object = None  # vLLM's stop_reason: the stop string that ended the text
        self.used_tool = False
        self.input_tokens = 0
        self.output_tokens = 0

    def close(self) -> list[str]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        return [_event("content_block_stop", {"index": self.index})]

    def open(self, kind: str, block: dict[str, Any]) -> list[str]:
        events = self.close()
        self.index += 1
        self.open_kind = kind
        events.append(_event("content_block_start", {"index": self.index, "content_block": block}))
        return events

    def _part(self, delta: dict[str, Any]) -> str:
        """`delta` as a content_block_delta of the open block."""
        return _event("content_block_delta", {"index": self.index, "delta": delta})

    def delta(self, chunk: dict[str, Any]) -> list[str]:
        events: list[str] = []
        if usage := chunk.get("usage"):
            self.input_tokens = usage.get("prompt_tokens", self.input_tokens)
            self.output_tokens = usage.get("completion_tokens", self.output_tokens)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if thought := _reasoning(delta):
                if self.open_kind != "thinking":
                    events += self.open(
                        "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                    )
                events.append(self._part({"type": "thinking_delta", "thinking": thought}))
            if text := delta.get("content"):
                if self.open_kind != "text":
                    events += self.open("text", {"type": "text", "text": ""})
                events.append(self._part({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                kind = f"tool{call.get('index', 0)}"
                function = call.get("function") or {}
                if self.open_kind != kind:
                    block = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    events += self.open(kind, block)
                    self.used_tool = True
                if args := function.get("arguments"):
                    events.append(self._part({"type": "input_json_delta", "partial_json": args}))
            if reason := choice.get("finish_reason"):
                self.finish_reason = reason
                self.matched = choice.get("stop_reason")
        return events


async def to_message_stream(openai_events: AsyncIterator[str], model: str) -> AsyncIterator[str]:
    """Anthropic's streaming events for an OpenAI chat stream."""
    state = _StreamState()
    message: dict[str, Any] = {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    yield _event("message_start", {"message": message})
    async for chunk in chat_chunks(openai_events):
        if "error" in chunk:
            error = chunk["error"]
            yield _event("error", {"error": {"type": "api_error", "message": error["message"]}})
            return
        for event in state.delta(chunk):
            yield event
    for event in state.close():
        yield event
    yield _event(
        "message_delta",
        {
            "delta": stop_fields(state.finish_reason, state.matched, state.used_tool),
            "usage": {"input_tokens": state.input_tokens, "output_tokens": state.output_tokens},
        },
    )
    yield _event("message_stop", {})
