"""Where a team's per-minute limits stand, as the headers its client reads: OpenAI's
`x-ratelimit-*` (the reset as a duration, "17s") or, on Anthropic's routes, Anthropic's
`anthropic-ratelimit-*` (the reset as an RFC 3339 time). Only limits the team has are named.

Anthropic splits tokens into input and output limits as well; a team here has one token
limit over both, which is what Anthropic's `anthropic-ratelimit-tokens-*` describe (the most
restrictive token limit in effect), so only those are sent."""

from __future__ import annotations

from datetime import UTC, datetime

from gemma_fleet.teams.limits import UNLIMITED, MinuteWindow


def ratelimit_headers(window: MinuteWindow | None, *, anthropic: bool) -> dict[str, str]:
    """The headers for `window` (none without one: a request no team limit counted)."""
    if window is None:
        return {}
    headers = {}
    for kind, used, limit in (
        ("requests", window.requests_used, window.requests_limit),
        ("tokens", window.tokens_used, window.tokens_limit),
    ):
        if limit == UNLIMITED:
            continue
        remaining = str(max(0, limit - used))
        if anthropic:
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = remaining
            headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(window.ends_at)
        else:
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = remaining
            headers[f"x-ratelimit-reset-{kind}"] = f"{window.reset_s}s"
    return headers


def _rfc3339(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
