"""Completions' `echo` through the gateway on simulator pools, read with the official SDK: each
choice's text is its prompt followed by its answer, as vLLM 0.32 gives it (streamed: the
prompt opens each choice's first chunk), with logprobs covering the prompt's tokens (the
first without one) in the shapes tests/vllm holds the real engine to (tests/logprobs_shape.py)."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from logprobs_shape import check_echo, completion_tokens_read

from gemma_fleet.deployments.engines.simulator import tokenizer


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


PROMPTS = ["Once upon a time", "Tell me about pears"]
SAMPLED: dict[str, Any] = {"model": "e2b", "max_tokens": 6, "seed": 11, "temperature": 1.0,
                           "extra_body": {"ignore_eos": True}}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
def test_echo_puts_each_prompt_before_each_of_its_answers(
    client: openai.OpenAI, stream: bool
) -> None:
    plain = client.completions.create(prompt=PROMPTS, n=2, **SAMPLED)
    if not stream:
        echoed = client.completions.create(prompt=PROMPTS, n=2, echo=True, **SAMPLED)
        texts = [c.text for c in sorted(echoed.choices, key=lambda c: c.index)]
        usage = echoed.usage
    else:
        texts = ["", "", "", ""]
        firsts: dict[int, str] = {}
        usage = None
        for chunk in client.completions.create(
            prompt=PROMPTS, n=2, echo=True, stream=True, stream_options={"include_usage": True},
            **SAMPLED,
        ):  # fmt: skip
            usage = chunk.usage or usage
            for choice in chunk.choices:
                firsts.setdefault(choice.index, choice.text)
                texts[choice.index] += choice.text
        # the prompt opens each choice's first chunk, with its first token
        assert all(firsts[k].startswith(PROMPTS[k // 2]) for k in range(4))
    answers = [c.text for c in sorted(plain.choices, key=lambda c: c.index)]
    assert texts == [PROMPTS[k // 2] + answers[k] for k in range(4)]
    assert usage is not None and plain.usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        plain.usage.prompt_tokens,
        plain.usage.completion_tokens,
    )


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_logprobs_covers_the_prompt(client: openai.OpenAI, stream: bool) -> None:
    prompt = PROMPTS[0]
    pieces = ["<bos>", *tokenizer.pieces(prompt)]
    body: dict[str, Any] = {**SAMPLED, "prompt": prompt, "echo": True, "logprobs": 2}
    if not stream:
        [choice] = client.completions.create(**body).choices
        logprobs = choice.model_dump()["logprobs"]
        text = choice.text
        # vLLM's prompt_logprobs as well (an extra field to the SDK)
        assert choice.model_extra is not None
        assert len(choice.model_extra["prompt_logprobs"]) == len(pieces)
    else:
        logprobs = {}
        text = ""
        for chunk in client.completions.create(stream=True, **body):
            for part in chunk.choices:
                text += part.text
                for key, values in part.model_dump()["logprobs"].items():
                    logprobs.setdefault(key, []).extend(values)
    check_echo(logprobs, len(pieces), 6, 2)
    assert logprobs["tokens"][: len(pieces)] == pieces
    assert text == prompt + "".join(logprobs["tokens"][len(pieces) :])


def test_a_token_id_prompt_echoes_its_decoded_tokens(client: openai.OpenAI) -> None:
    ids = [tokenizer.BOS_ID, *tokenizer.encode("Once upon a time")]
    answer = client.completions.create(prompt=[ids, ids[:3]], echo=True, **SAMPLED)
    for choice, prompt in zip(answer.choices, [ids, ids[:3]], strict=True):
        assert choice.text.startswith("".join(tokenizer.decode_id(t) for t in prompt))
        assert choice.text.startswith("<bos>")
    assert answer.usage is not None and answer.usage.prompt_tokens == len(ids) + 3


@pytest.mark.parametrize("stream", [False, True])
def test_echo_only_max_tokens_0_scores_the_prompt(client: openai.OpenAI, stream: bool) -> None:
    """vLLM's echo-only request (how evaluation harnesses score a prompt): the prompt back
    with its logprobs, nothing generated shown; the engine counts one token. The gateway
    refused it (its max_tokens was at least 1)."""
    body: dict[str, Any] = {"model": "e2b", "prompt": PROMPTS[0], "max_tokens": 0,
                            "echo": True, "logprobs": 1}  # fmt: skip
    pieces = ["<bos>", *tokenizer.pieces(PROMPTS[0])]
    text, usage, tokens = completion_tokens_read(client, body, stream)
    assert text == PROMPTS[0]
    assert tokens == pieces  # the prompt's tokens only
    assert usage is not None and usage.prompt_tokens == len(pieces)
    assert usage.completion_tokens == 1


def test_echo_only_takes_min_tokens_1_as_vllm_does(client: openai.OpenAI) -> None:
    """The one token echo-only generates meets min_tokens 1; it was a 400 (limit 0)."""
    answer = client.completions.create(
        model="e2b", prompt=PROMPTS[0], max_tokens=0, echo=True, extra_body={"min_tokens": 1}
    )
    assert answer.choices[0].text == PROMPTS[0]


def test_max_tokens_0_without_echo_is_a_400_naming_it(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="e2b", prompt="Hi", max_tokens=0)
    assert err.value.status_code == 400 and "max_tokens" in err.value.message
