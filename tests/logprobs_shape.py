"""The shape of logprobs in answers, as vLLM 0.32 gives them: one checker for the real engine
(tests/vllm) and the simulator (tests/simulator, tests/gateway), so both are held to the same
keys. Arguments are the JSON a client receives (a choice's `logprobs` object)."""

from __future__ import annotations

import json
from typing import Any

import httpx

# vLLM 0.32's keys (vllm/entrypoints/openai/chat_completion/protocol.py ChatCompletionLogProb*,
# completion/protocol.py CompletionLogProbs), seen on the wire from a real engine.
CHAT_KEYS = {"content"}
CHAT_TOKEN_KEYS = {"token", "logprob", "bytes", "top_logprobs"}
CHAT_TOP_KEYS = {"token", "logprob", "bytes"}
COMPLETION_KEYS = {"text_offset", "token_logprobs", "tokens", "top_logprobs"}


def check_chat(logprobs: dict[str, Any], tokens: int, top: int) -> list[dict[str, Any]]:
    """A chat choice's logprobs: `tokens` entries, each with `top` candidates (top_logprobs;
    none when unset). Returns the entries."""
    assert set(logprobs) == CHAT_KEYS, logprobs
    content = logprobs["content"]
    assert len(content) == tokens
    for entry in content:
        assert set(entry) == CHAT_TOKEN_KEYS, entry
        assert isinstance(entry["token"], str) and entry["logprob"] <= 0
        assert entry["bytes"] == list(entry["token"].encode("utf-8", errors="replace"))
        assert len(entry["top_logprobs"]) == top
        for candidate in entry["top_logprobs"]:
            assert set(candidate) == CHAT_TOP_KEYS, candidate
            assert candidate["logprob"] <= 0
            assert candidate["bytes"] == list(candidate["token"].encode("utf-8", errors="replace"))
    return list(content)


def check_completion(logprobs: dict[str, Any], tokens: int, asked: int, offset: int = 0) -> int:
    """A completion choice's logprobs for `tokens` tokens whose text starts at `offset`:
    parallel lists, each position's candidates a map of at most max(asked, 1) tokens (the
    sampled one first; vLLM's map folds candidates that decode alike) to logprobs. Returns
    the offset after them (vLLM's text_offset counts the tokens, not the text it sent)."""
    assert set(logprobs) == COMPLETION_KEYS, logprobs
    assert [len(logprobs[key]) for key in sorted(COMPLETION_KEYS)] == [tokens] * 4
    expected = offset
    for token, logprob, at, candidates in zip(
        logprobs["tokens"],
        logprobs["token_logprobs"],
        logprobs["text_offset"],
        logprobs["top_logprobs"],
        strict=True,
    ):
        assert at == expected and logprob <= 0
        expected += len(token)
        assert 1 <= len(candidates) <= max(asked, 1)
        assert next(iter(candidates)) == token
        assert all(value <= 0 for value in candidates.values())
    return expected


def check_echo(logprobs: dict[str, Any], prompt: int, tokens: int, asked: int) -> int:
    """A completion choice's logprobs with its prompt echoed (vLLM 0.32: `prompt` prompt
    positions, then `tokens` generated ones checked as check_completion checks them). The
    prompt's first token has no logprob and no candidates (null); each later one maps itself
    first, then up to `asked` candidates the model ranks above it (vLLM's prompt_logprobs).
    Offsets run over the tokens' text from 0. Returns the offset after them."""
    assert set(logprobs) == COMPLETION_KEYS, logprobs
    assert [len(logprobs[key]) for key in sorted(COMPLETION_KEYS)] == [prompt + tokens] * 4
    assert logprobs["token_logprobs"][0] is None and logprobs["top_logprobs"][0] is None
    expected = 0
    for k in range(prompt):
        token = logprobs["tokens"][k]
        assert isinstance(token, str) and logprobs["text_offset"][k] == expected
        expected += len(token)
        if k:
            candidates = logprobs["top_logprobs"][k]
            assert logprobs["token_logprobs"][k] <= 0
            assert 1 <= len(candidates) <= asked + 1 and next(iter(candidates)) == token
            assert candidates[token] == logprobs["token_logprobs"][k]
    rest = {key: values[prompt:] for key, values in logprobs.items()}
    return check_completion(rest, tokens, asked, expected)


def completion_tokens_read(
    client: Any, body: dict[str, Any], stream: bool
) -> tuple[str, Any, list[str]]:
    """A one-choice completion with logprobs through the OpenAI SDK `client`, streamed or
    not, read back whole: (its text, its usage, the tokens its logprobs cover)."""
    if not stream:
        answer = client.completions.create(**body)
        [choice] = answer.choices
        return choice.text, answer.usage, choice.model_dump()["logprobs"]["tokens"]
    text, usage = "", None
    tokens: list[str] = []
    for chunk in client.completions.create(
        stream=True, stream_options={"include_usage": True}, **body
    ):
        usage = chunk.usage or usage
        for part in chunk.choices:
            text += part.text
            tokens += (part.model_dump()["logprobs"] or {}).get("tokens") or []
    return text, usage, tokens


def _events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """An answer as JSON: the one body, or the stream's chunks."""
    if not body["stream"]:
        r = httpx.post(url, json=body, timeout=120)
        assert r.status_code == 200, r.text
        return [r.json()]
    with httpx.stream("POST", url, json=body, timeout=120) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    return [json.loads(line[len("data: ") :]) for line in lines]


def check_wire(base_url: str, model: str, stream: bool, **sampling: Any) -> None:
    """Chat (top_logprobs 2) and completions (logprobs 1) answers of exactly 5 tokens from
    the server at `base_url` (OpenAI's /v1 paths) carry logprobs in vLLM's shapes, in the
    role chunk none, and in every token chunk that token's."""
    fixed = {"model": model, "max_tokens": 5, "ignore_eos": True, "stream": stream, **sampling}
    chat = {**fixed, "messages": [{"role": "user", "content": "Say hello"}], "logprobs": True,
            "top_logprobs": 2}  # fmt: skip
    choices = [c for e in _events(base_url + "/chat/completions", chat) for c in e["choices"]]
    carrying = [c for c in choices if c["logprobs"] is not None]
    for choice in carrying:
        check_chat(choice["logprobs"], 1 if stream else 5, 2)
    assert len(carrying) == (5 if stream else 1)
    if stream:
        assert choices[0]["delta"].get("role") == "assistant" and choices[0]["logprobs"] is None
    completion = {**fixed, "prompt": [2, 100], "logprobs": 1}
    events = _events(base_url + "/completions", completion)
    offset = 0
    for choice in [c for e in events for c in e["choices"]]:
        offset = check_completion(choice["logprobs"], 1 if stream else 5, 1, offset)
