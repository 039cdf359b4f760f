"""What a stream the client cut short is charged: the tokens it delivered. The events are shaped
as vLLM 0.32 writes them (`ChatCompletionStreamResponse.model_dump_json(exclude_unset=True)`):
each choice opens with an event carrying only its role and closes with one carrying its finish
reason, neither of which is a token the team should pay for."""

from __future__ import annotations

import json
from typing import Any

from gemma_fleet.gateway.accounting import StreamTally, Usage

PROMPT_ESTIMATE = 40


def _event(choice: dict[str, Any], **extra: Any) -> str:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gemma-4-e2b",
        "choices": [{"logprobs": None, "finish_reason": None, **choice}],
        **extra,
    }
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def opening(index: int = 0) -> str:
    return _event({"index": index, "delta": {"role": "assistant", "content": ""}})


def text(piece: str, index: int = 0, field: str = "content") -> str:
    return _event({"index": index, "delta": {field: piece}})


def finish(index: int = 0, last: str = "") -> str:
    delta = {"content": last} if last else {}
    return _event({"index": index, "delta": delta, "finish_reason": "length"})


def cut_after(*chunks: str) -> Usage:
    """What a stream that ended after `chunks`, without vLLM's closing usage event, is charged."""
    tally = StreamTally(client_wants_usage=False)
    for chunk in chunks:
        tally.see(chunk)
    return tally.usage(PROMPT_ESTIMATE)


def test_a_cut_stream_is_charged_one_token_per_text_event_and_not_its_role_or_finish() -> None:
    usage = cut_after(opening(), text("Once"), text(" upon"), text(" a"), finish())
    assert usage == Usage(PROMPT_ESTIMATE, 3)


def test_the_last_token_sent_with_the_finish_reason_is_charged() -> None:
    assert cut_after(opening(), text("Yes"), finish(last=".")).completion_tokens == 2


def test_several_choices_are_each_charged_their_own_tokens_only() -> None:
    events = [opening(0), opening(1), text("a", 0), text("b", 1), text("c", 1)]
    events += [finish(0), finish(1)]
    assert cut_after(*events).completion_tokens == 3


def test_thinking_and_tool_call_deltas_are_tokens_too() -> None:
    call = {
        "index": 0,
        "delta": {
            "tool_calls": [
                {"index": 0, "id": "c1", "type": "function", "function": {"name": "weather"}}
            ]
        },
    }
    arguments = {
        "index": 0,
        "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
    }
    usage = cut_after(opening(), text("hm", field="reasoning"), _event(call), _event(arguments))
    assert usage.completion_tokens == 3


def test_the_gateways_error_event_is_not_a_token() -> None:
    error = 'data: {"error":{"message":"the pool went away","type":"server_error"}}\n\n'
    assert cut_after(opening(), text("partial"), error).completion_tokens == 1


def test_events_that_arrive_together_are_each_counted() -> None:
    assert cut_after(opening() + text("a") + text("b") + finish()).completion_tokens == 2


def test_text_that_quotes_the_field_names_is_one_token() -> None:
    quoting = text('{"content": "x", "text": "y"}')
    assert cut_after(quoting).completion_tokens == 1


def test_completions_events_count_their_text() -> None:
    def completion(piece: str, finish_reason: str | None = None) -> str:
        choice = {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish_reason}
        return f"data: {json.dumps({'object': 'text_completion', 'choices': [choice]})}\n\n"

    usage = cut_after(completion(" one"), completion(" two"), completion("", "length"))
    assert usage.completion_tokens == 2


def test_a_stream_that_reached_its_usage_is_charged_the_engines_count() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    usage_event = f"data: {json.dumps({'id': 'chatcmpl-1', 'choices': [], 'usage': usage})}\n\n"
    tally = StreamTally(client_wants_usage=False)
    kept = [tally.see(c) for c in (opening(), text("a"), finish(), usage_event)]
    assert kept[-1] == ""  # the client did not ask for the usage event
    assert tally.usage(PROMPT_ESTIMATE) == Usage(12, 7)
