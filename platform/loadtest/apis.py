"""The three APIs a virtual user can call, and each one's request body.

The payload functions (payloads.py) write every request as a chat completion; a workload with
`api: messages` or `api: responses` sends the same conversation, images, audio, token limit and
JSON schema as Anthropic's Messages or OpenAI's Responses body, so the mix of prompts stays the
same whichever API a team's client speaks.
"""

from __future__ import annotations

from typing import Any, Literal

Api = Literal["chat", "messages", "responses"]
APIS: tuple[Api, ...] = ("chat", "messages", "responses")
PATHS: dict[Api, str] = {
    "chat": "/chat/completions",
    "messages": "/messages",
    "responses": "/responses",
}


def body_for(api: Api, chat_body: dict[str, Any]) -> dict[str, Any]:
    """`chat_body` (a chat-completions request) as a request to `api`."""
    if api == "messages":
        return messages_body(chat_body)
    if api == "responses":
        return responses_body(chat_body)
    return chat_body


def _system_and_turns(chat_body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The system turns' text (both APIs take it apart from the conversation), and the rest."""
    system = [m["content"] for m in chat_body["messages"] if m["role"] == "system"]
    texts = [c if isinstance(c, str) else "\n".join(p["text"] for p in c if p["type"] == "text")
             for c in system]  # fmt: skip
    return "\n\n".join(texts), [m for m in chat_body["messages"] if m["role"] != "system"]


def messages_body(chat_body: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request: system turns in `system`, images as base64 blocks, the
    JSON schema as `output_config.format`."""
    system, turns = _system_and_turns(chat_body)
    body: dict[str, Any] = {
        "model": chat_body["model"],
        "max_tokens": chat_body["max_tokens"],
        "stream": chat_body.get("stream", False),
        "messages": [
            {"role": m["role"], "content": _anthropic_content(m["content"])} for m in turns
        ],
    }
    if system:
        body["system"] = system
    if _thinks(chat_body):
        body["thinking"] = {"type": "adaptive"}  # no budget_tokens, which Gemma cannot keep
    schema = _json_schema(chat_body)
    if schema is not None:
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema["schema"]}}
    return body


def _anthropic_content(content: str | list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    blocks = []
    for part in content:
        if part["type"] == "text":
            blocks.append({"type": "text", "text": part["text"]})
        elif part["type"] == "image_url":
            # payloads.py sends data: URLs, "data:image/png;base64,<data>"
            head, _, data = part["image_url"]["url"].partition(",")
            media_type = head.removeprefix("data:").removesuffix(";base64")
            source = {"type": "base64", "media_type": media_type, "data": data}
            blocks.append({"type": "image", "source": source})
        elif part["type"] == "file":
            # payloads.py sends PDFs as data: URLs, "data:application/pdf;base64,<data>"
            data = part["file"]["file_data"].partition(",")[2]
            source = {"type": "base64", "media_type": "application/pdf", "data": data}
            blocks.append({"type": "document", "source": source, "title": part["file"]["filename"]})
        else:  # the workload file refuses audio for this API (workload.py)
            raise ValueError(f"Anthropic's Messages API has no {part['type']} blocks")
    return blocks


def responses_body(chat_body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI Responses request: system turns as `instructions`, the conversation as
    message items, the JSON schema as `text.format`."""
    system, turns = _system_and_turns(chat_body)
    body: dict[str, Any] = {
        "model": chat_body["model"],
        "max_output_tokens": chat_body["max_tokens"],
        "stream": chat_body.get("stream", False),
        "input": [
            {"role": m["role"], "content": _responses_content(m["role"], m["content"])}
            for m in turns
        ],
    }
    if system:
        body["instructions"] = system
    if _thinks(chat_body):
        body["reasoning"] = {"effort": "high"}
    schema = _json_schema(chat_body)
    if schema is not None:
        body["text"] = {"format": {"type": "json_schema", **schema}}
    return body


def _responses_content(role: str, content: str | list[dict[str, Any]]) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part["type"] == "text":
            kind = "output_text" if role == "assistant" else "input_text"
            parts.append({"type": kind, "text": part["text"]})
        elif part["type"] == "image_url":
            parts.append({"type": "input_image", "image_url": part["image_url"]["url"]})
        elif part["type"] == "input_audio":
            parts.append({"type": "input_audio", "input_audio": part["input_audio"]})
        elif part["type"] == "file":
            parts.append({"type": "input_file", **part["file"]})
        else:
            raise ValueError(f"no Responses part for a chat {part['type']} part")
    return parts


def _thinks(chat_body: dict[str, Any]) -> bool:
    """Whether the chat request asks Gemma 4 to think (its chat template's switch)."""
    return bool((chat_body.get("chat_template_kwargs") or {}).get("enable_thinking"))


def _json_schema(chat_body: dict[str, Any]) -> dict[str, Any] | None:
    """The chat request's `response_format.json_schema` (name, schema, strict), if any."""
    fmt = chat_body.get("response_format") or {}
    return fmt.get("json_schema") if fmt.get("type") == "json_schema" else None
