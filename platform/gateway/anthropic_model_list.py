"""Anthropic's Models API (`GET /v1/models`, `GET /v1/models/{id}`) over the gateway's model
cards: the Anthropic SDKs read `type`, `display_name` and `created_at` and page with
`has_more`, `first_id` and `last_id`, none of which OpenAI's list has. The same URL serves
both shapes; a request carrying `anthropic-version` (every Anthropic SDK sends it) gets this
one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gemma_fleet.gateway.errors import ApiError

# Anthropic's page size: 20 unless `limit` says otherwise, from 1 to 1,000.
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def wants_anthropic(headers: Any) -> bool:
    """Whether the caller speaks Anthropic's API (its SDKs send `anthropic-version`)."""
    return "anthropic-version" in headers


def model_info(card: dict[str, Any]) -> dict[str, Any]:
    """One OpenAI model card as Anthropic's ModelInfo; the card's own fields (pools,
    modalities, max_model_len) stay beside Anthropic's."""
    info = {k: v for k, v in card.items() if k not in ("object", "created", "owned_by")}
    created = datetime.fromtimestamp(card["created"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        **info,
        "type": "model",
        "display_name": card["id"],
        "created_at": created,
        "max_input_tokens": card["max_model_len"],
    }


def model_page(
    cards: list[dict[str, Any]],
    limit: str | None = None,
    after_id: str | None = None,
    before_id: str | None = None,
) -> dict[str, Any]:
    """A page of Anthropic's model list: `limit` models after `after_id` (or the last `limit`
    before `before_id`), with `has_more` saying whether the list goes on that way."""
    size = _limit(limit)
    ids = [c["id"] for c in cards]
    if after_id is not None and before_id is not None:
        raise ApiError(400, "give after_id or before_id, not both", param="after_id")
    if after_id is not None:
        start = _position(ids, after_id, "after_id") + 1
        chosen = cards[start : start + size]
        more = start + size < len(cards)
    elif before_id is not None:
        end = _position(ids, before_id, "before_id")
        chosen = cards[max(0, end - size) : end]
        more = end - size > 0
    else:
        chosen, more = cards[:size], size < len(cards)
    data = [model_info(c) for c in chosen]
    return {
        "data": data,
        "has_more": more,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}", param="limit")
    return value


def _position(ids: list[str], model_id: str, param: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise ApiError(404, f"{param}: model {model_id!r} does not exist", param=param) from None
