"""Choose the pool that serves a request, from what the request needs.

Order of decisions, each one explainable:
1. capability: the pool's model must take every modality in the request (audio only E2B/E4B;
   a text-only pool takes no media at all);
2. context: prompt + max output tokens must fit the pool's max_model_len (each of a request's n
   sequences holds its own copy of the context); a request's n sequences must fit in one
   replica's batch (max_num_seqs), since vLLM runs them on the replica that takes the request;
3. team policy: the team may only use the models it is allowed;
4. health: pools with no healthy replica are skipped;
5. load: pools below saturation come before saturated ones;
6. cost: the smallest capable model first; among pools of one model, the shortest max_model_len
   that fits (long-context pools stay free for the requests only they can take), then the
   lighter-loaded pool.
A request that names a concrete model or pool is honoured or refused with the reason and the
models that could serve it; an alias lets the router choose among its pools.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from gemma_fleet.catalog import Modality

SATURATED = 1.0  # load at which a pool's replicas have no free slot


@dataclass(frozen=True)
class RequestNeeds:
    """What a request needs from a pool, as classified by the gateway."""

    prompt_tokens: int
    max_output_tokens: int
    modalities: frozenset[Modality] = frozenset({Modality.TEXT})
    tools: bool = False
    structured_output: bool = False
    # Sequences the request runs: OpenAI's n (choices sampled from one prompt), times the
    # prompts of a completions batch (each prompt's n choices).
    sequences: int = 1
    prompts: int = 1  # a completions batch's prompts; prompt_tokens is the longest one's
    # The prompts of a batch together (what the engine reads and reports); None: one prompt,
    # prompt_tokens.
    batch_prompt_tokens: int | None = None

    @property
    def input_tokens(self) -> int:
        """Every prompt token the request sends: its prompt, or a batch's prompts."""
        return self.prompt_tokens if self.batch_prompt_tokens is None else self.batch_prompt_tokens

    @property
    def context_tokens(self) -> int:
        """What one sequence holds in the pool's context: the (longest) prompt and its
        output."""
        return self.prompt_tokens + self.max_output_tokens

    @property
    def total_tokens(self) -> int:
        """What the request may use in all (what a team's admission reserves): each prompt
        once (the engine reads it once and reports it once) and up to max_output_tokens for
        each of its sequences."""
        return self.input_tokens + self.sequences * self.max_output_tokens


@dataclass(frozen=True)
class PoolView:
    """What the router knows of a pool at decision time."""

    name: str
    model: str
    max_model_len: int
    modalities: frozenset[Modality]
    size_rank: float  # smaller serves cheaper (the model's parameter count)
    healthy: bool = True
    load: float = 0.0  # running / capacity over its replicas; >= SATURATED means no free slot
    max_num_seqs: int | None = None  # sequences one replica runs at once (None: unknown)


@dataclass(frozen=True)
class RouteDecision:
    pool: str
    reason: str
    considered: tuple[str, ...]


@dataclass
class RoutingError(Exception):
    """No pool can serve the request. `status` is the HTTP status the gateway answers with."""

    status: int
    message: str
    capable_models: list[str] = field(default_factory=list)
    retry_after_s: int | None = None
    param: str = "model"  # the request field the refusal is about
    missing: frozenset[Modality] = frozenset()  # input the requested pools do not take

    def __str__(self) -> str:
        return self.message


def _missing(needs: RequestNeeds, pool: PoolView) -> frozenset[Modality]:
    return needs.modalities - pool.modalities


def _capable(needs: RequestNeeds, pool: PoolView) -> str | None:
    """Why `pool` cannot serve `needs` by capability or context, or None when it can."""
    if missing := _missing(needs, pool):
        names = ", ".join(sorted(m.value for m in missing))
        return f"{pool.name} ({pool.model}) does not take {names} input"
    if needs.context_tokens > pool.max_model_len:
        return (
            f"{pool.name} holds {pool.max_model_len:,} tokens; the request needs "
            f"{needs.context_tokens:,} ({needs.prompt_tokens:,} prompt + "
            f"{needs.max_output_tokens:,} output)"
        )
    if _too_many_sequences(needs, pool):
        n = needs.sequences // needs.prompts
        asks = f"n={n}" if needs.prompts == 1 else f"{needs.prompts} prompts x n={n}"
        return (
            f"{pool.name} runs at most {pool.max_num_seqs} sequences per replica; "
            f"{asks} asks for {needs.sequences}"
        )
    return None


def _too_many_sequences(needs: RequestNeeds, pool: PoolView) -> bool:
    return pool.max_num_seqs is not None and needs.sequences > pool.max_num_seqs


def _targets(
    requested: str, pools: list[PoolView], aliases: Mapping[str, Iterable[str]]
) -> list[PoolView]:
    """The pools a requested name may use: an alias's pools, a pool by name, or every pool of a
    catalog model."""
    if requested in aliases:
        wanted = set(aliases[requested])
        return [p for p in pools if p.name in wanted or p.model in wanted]
    return [p for p in pools if requested in (p.name, p.model)]


def route(
    needs: RequestNeeds,
    requested: str,
    pools: Iterable[PoolView],
    *,
    aliases: Mapping[str, Iterable[str]] | None = None,
    allowed_models: frozenset[str] | None = None,
) -> RouteDecision:
    """The pool that serves `needs` for a request naming `requested` (model, pool or alias).

    `allowed_models` (team policy) lists the pools, models or aliases the team may use; None
    allows everything. Raises RoutingError with the HTTP status and reason otherwise."""
    everything = list(pools)
    aliases = aliases or {}
    targets = _targets(requested, everything, aliases)
    if not targets:
        known = sorted({p.name for p in everything} | {p.model for p in everything} | set(aliases))
        raise RoutingError(404, f"model {requested!r} does not exist; known: {', '.join(known)}")

    capable: list[PoolView] = []
    refusals: list[str] = []
    for pool in targets:
        why = _capable(needs, pool)
        if why is None:
            capable.append(pool)
        else:
            refusals.append(why)
    if not capable:
        # Say which pools elsewhere in the fleet could have served it.
        elsewhere = sorted({p.name for p in everything if _capable(needs, p) is None})
        hint = f"; pools that could serve it: {', '.join(elsewhere)}" if elsewhere else ""
        message = f"{requested!r} cannot serve this request: {'; '.join(refusals)}{hint}"
        # Refused for its sequences alone (it would fit with fewer): the 400 names n, or a
        # batch's prompt.
        only_n = all(
            _too_many_sequences(needs, p) and _capable(replace(needs, sequences=1), p) is None
            for p in targets
        )
        param = ("n" if needs.prompts == 1 else "prompt") if only_n else "model"
        missing = frozenset().union(*(_missing(needs, p) for p in targets))
        raise RoutingError(400, message, elsewhere, param=param, missing=missing)

    if allowed_models is not None:
        permitted = [p for p in capable if _allowed(p, requested, allowed_models)]
        if not permitted:
            raise RoutingError(
                403, f"your team may not use {requested!r}", sorted(p.name for p in capable)
            )
        capable = permitted

    healthy = [p for p in capable if p.healthy]
    if not healthy:
        raise RoutingError(
            503,
            f"every pool that can serve {requested!r} is down: "
            + ", ".join(p.name for p in capable),
            sorted(p.name for p in capable),
            retry_after_s=5,
        )

    chosen = min(
        healthy,
        key=lambda p: (p.load >= SATURATED, p.size_rank, p.max_model_len, p.load, p.name),
    )
    reason = _explain(chosen, healthy, len(targets) > 1)
    return RouteDecision(pool=chosen.name, reason=reason, considered=tuple(p.name for p in healthy))


def _allowed(pool: PoolView, requested: str, allowed: frozenset[str]) -> bool:
    return permits(allowed, requested, pool.name, pool.model)


def permits(allowed: frozenset[str], requested: str, pool: str, model: str) -> bool:
    """Whether a team allowed `allowed` (pools, catalog models or aliases) may have a request
    naming `requested` served by `pool` (which serves `model`)."""
    return bool({pool, model, requested} & allowed)


def _explain(chosen: PoolView, healthy: list[PoolView], choice: bool) -> str:
    if not choice:
        return "requested"
    if chosen.load >= SATURATED:
        return "all capable pools saturated; least loaded"
    if any(p.load >= SATURATED and p.size_rank < chosen.size_rank for p in healthy):
        return "smaller capable pool saturated"
    return "smallest capable model"
