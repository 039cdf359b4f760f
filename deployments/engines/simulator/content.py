"""What a simulated answer says: structurally valid, deterministic content of a given length.

- Plain text: English-looking words from a fixed list. Its natural length is drawn from the
  request's seed in [answer_tokens_min, answer_tokens_max] (config), then capped by max_tokens
  (finish_reason "length") unless min_tokens or ignore_eos ask for more.
- Tool calls, when tools are offered and chosen: tool_choice "required" or a named function
  always call; "auto" calls the first tool whose name (or a word of it, split on _ and -)
  appears in the last user message, unless the last message is a tool result (then the model
  answers in text); "none" never calls. Arguments are generated from the tool's JSON schema.
- response_format json_schema / json_object: a JSON document valid for the schema.
- Thinking (chat_template_kwargs.enable_thinking, Gemma 4's switch): reasoning text comes
  first, of its own natural length drawn like the text's, and counts against max_tokens as
  vLLM counts it; what vLLM's reasoning parser returns as `reasoning`. A request that runs
  out of tokens while thinking has reasoning and no answer; so has one whose thinking holds a
  stop string, since vLLM looks for them in everything it generates.
The output is a list of token-sized pieces; the token count is the number of pieces.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field, replace
from typing import Any

from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.schema_gen import WORDS, SchemaError, generate

_TEXT = (
    "the model serves requests across the fleet while each replica keeps its cache warm and "
    "the router picks a pool that fits the context length so answers arrive quickly and "
    "tokens stream back to the client in order with usage counted per team"
)
TEXT_WORDS = [*_TEXT.split(" "), *WORDS]


@dataclass
class AnswerPlan:
    """The pieces a request will output, token by token."""

    kind: str  # "text", "json" or "tool_call"
    pieces: list[str]
    finish_reason: str  # "stop", "length" or "tool_calls"
    tool_name: str | None = None
    tool_call_id: str | None = None
    header_tokens: int = 0  # tool calls: leading tokens that carry the name, not arguments
    reasoning_tokens: int = 0  # leading tokens of thinking, before the answer (and header)
    # The stop string the text was cut at, which vLLM reports as the choice's stop_reason.
    stop_reason: str | None = None
    token_ids: list[int] = field(default_factory=list)
    # What each token adds to the text: its piece, except at a stop string, where vLLM cuts the
    # text where the string starts but keeps (and counts) the tokens up to the one completing
    # it. Logprobs name the tokens themselves.
    shown: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.token_ids:
            self.token_ids = [tokenizer.token_id(p) for p in self.pieces]
        if not self.shown:
            self.shown = list(self.pieces)

    @property
    def text(self) -> str:
        return "".join(self.shown[self.reasoning_tokens + self.header_tokens :])

    @property
    def reasoning(self) -> str | None:
        """The thinking vLLM's reasoning parser would return; None when the model did not
        think."""
        return "".join(self.shown[: self.reasoning_tokens]) if self.reasoning_tokens else None

    def kind_of(self, index: int) -> str:
        """What output token `index` is: "reasoning", "header" (a tool call's name) or
        "answer"."""
        if index < self.reasoning_tokens:
            return "reasoning"
        if index < self.reasoning_tokens + self.header_tokens:
            return "header"
        return "answer"


@dataclass(frozen=True)
class AnswerSpec:
    """What decides an answer, extracted from an OpenAI request."""

    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    stop: tuple[str, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()  # {"name", "parameters"}
    tool_choice: Any = "auto"
    last_role: str = "user"
    last_user_text: str = ""
    response_format: dict[str, Any] | None = None
    thinking: bool = False


def text_pieces(rng: random.Random, n: int) -> list[str]:
    out: list[str] = []
    first = True
    while len(out) < n:
        word = rng.choice(TEXT_WORDS)
        if first:
            word = word.capitalize()
        sentence_end = rng.random() < 0.08
        chunk = ("" if first else " ") + word + ("." if sentence_end else "")
        first = sentence_end
        out.extend(tokenizer.pieces(chunk))
    return out[:n]


def choose_tool(spec: AnswerSpec) -> dict[str, Any] | None:
    """The tool the simulated model calls, or None to answer in text (module docstring)."""
    if not spec.tools:
        return None
    choice = spec.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in spec.tools if t["name"] == name), None)
    if choice == "none":
        return None
    matched = _matching_tool(spec)
    if choice == "required":
        return matched or spec.tools[0]
    return None if spec.last_role == "tool" else matched


def _matching_tool(spec: AnswerSpec) -> dict[str, Any] | None:
    words = set(re.findall(r"[a-z0-9]+", spec.last_user_text.lower()))
    text = spec.last_user_text.lower()
    for tool in spec.tools:
        name = tool["name"].lower()
        if name in text or any(part in words for part in re.split(r"[_\-.]", name) if part):
            return tool
    return None


def _cap(pieces: list[str], spec: AnswerSpec, natural: str) -> tuple[list[str], str]:
    if len(pieces) > spec.max_tokens:
        return pieces[: spec.max_tokens], "length"
    return pieces, natural


def _instance(schema: Any, rng: random.Random, param: str) -> Any:
    """An instance of the schema the request holds at `param`; SchemaError naming `param` if
    none can be made (the engine's 400: a bad schema is the client's, as in vLLM)."""
    try:
        return generate(schema, rng)
    except SchemaError as exc:
        raise SchemaError(f"the JSON schema in {param} cannot be served: {exc}", param) from exc
    except RecursionError:
        raise SchemaError(f"the JSON schema in {param} is nested too deeply", param) from None


def plan_answer(spec: AnswerSpec, rng: random.Random, length_range: tuple[int, int]) -> AnswerPlan:
    """The deterministic answer to a request described by `spec` (rng seeded per request)."""
    if not spec.thinking:
        return _plan_reply(spec, rng, length_range)
    lo, hi = length_range
    # Thinking first, then the reply in what max_tokens leaves (min_tokens counts both).
    thought = text_pieces(rng, min(rng.randint(lo, max(lo, hi)), spec.max_tokens))
    if (cut := _cut_at_stop(thought, spec.stop, spec.min_tokens)) is not None:
        # vLLM looks for stop strings in all it generates, thinking included: the answer ends
        # there, all reasoning, with nothing for the content.
        kept, shown, matched = cut
        return AnswerPlan(
            "text", kept, "stop", reasoning_tokens=len(kept), stop_reason=matched, shown=shown
        )
    left = spec.max_tokens - len(thought)
    if left == 0:
        return AnswerPlan("text", thought, "length", reasoning_tokens=len(thought))
    reply = _plan_reply(
        replace(spec, max_tokens=left, min_tokens=max(0, spec.min_tokens - len(thought))),
        rng,
        length_range,
    )
    return replace(
        reply,
        pieces=thought + reply.pieces,
        shown=thought + reply.shown,
        token_ids=[tokenizer.token_id(p) for p in thought] + reply.token_ids,
        reasoning_tokens=len(thought),
    )


def _cut_at_stop(
    pieces: list[str], stop: tuple[str, ...], min_tokens: int
) -> tuple[list[str], list[str], str] | None:
    """At the first stop string in the text of `pieces`: the pieces up to the one that
    completes it, what each shows of the text (none of the string or after it), and the
    string; None if none is there. As vLLM reads its output, the stop string that ends first
    wins (of two ending at one place, the one listed first), and one counts only if it ends
    past the first `min_tokens` tokens."""
    text = "".join(pieces)
    held = len("".join(pieces[:min_tokens]))  # vLLM's check starts after these characters
    found = [
        (i + len(s), k, i, s)
        for k, s in enumerate(stop)
        if s and (i := text.find(s, max(0, held - len(s) + 1))) >= 0
    ]
    if not found:
        return None
    end, _, cut, matched = min(found)
    kept: list[str] = []
    shown: list[str] = []
    size = 0
    for p in pieces:
        kept.append(p)
        shown.append(p[: max(0, cut - size)])
        size += len(p)
        if size >= end:
            break
    return kept, shown, matched


def _plan_reply(spec: AnswerSpec, rng: random.Random, length_range: tuple[int, int]) -> AnswerPlan:
    """The answer after any thinking: a tool call, a JSON document or text."""
    tool = choose_tool(spec)
    if tool is not None:
        index = next(i for i, t in enumerate(spec.tools) if t is tool)
        schema = tool.get("parameters") or {"type": "object"}
        arguments = json.dumps(_instance(schema, rng, f"tools[{index}].function.parameters"))
        header = [f"<|tool_call>call:{tool['name']}"]
        pieces, reason = _cap(header + tokenizer.pieces(arguments), spec, "tool_calls")
        call_id = f"chatcmpl-tool-{rng.getrandbits(128):032x}"
        return AnswerPlan("tool_call", pieces, reason, tool["name"], call_id, header_tokens=1)
    fmt = spec.response_format or {}
    if fmt.get("type") in ("json_schema", "json_object"):
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
        else:
            schema = {"type": "object", "required": ["answer"], "properties": {"answer": {}}}
        document = json.dumps(_instance(schema, rng, "response_format.json_schema.schema"))
        pieces, reason = _cap(tokenizer.pieces(document), spec, "stop")
        return AnswerPlan("json", pieces, reason)
    lo, hi = length_range
    natural = rng.randint(lo, max(lo, hi))
    if spec.ignore_eos:
        n, reason = spec.max_tokens, "length"
    else:
        # As vLLM: the end-of-sequence token comes after the text and is held back until
        # min_tokens are out; when the text reaches max_tokens there is no room left for it.
        wanted = max(natural, spec.min_tokens)
        n = min(wanted, spec.max_tokens)
        reason = "stop" if wanted < spec.max_tokens else "length"
    pieces = text_pieces(rng, n)
    if (cut := _cut_at_stop(pieces, spec.stop, spec.min_tokens)) is not None:
        kept, shown, matched = cut
        return AnswerPlan("text", kept, "stop", stop_reason=matched, shown=shown)
    return AnswerPlan("text", pieces, reason)
