"""The admin API (`/admin/...`, admin credential only) and a team's own usage (`/v1/usage`,
team key: its own team, never another's).

Team and key administration: create, read, update and delete teams; issue keys (the secret is
in the answer, once), list and revoke them; read usage per team x model x day.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from datetime import date, timedelta
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from gemma_fleet.gateway.auth import TeamGate
from gemma_fleet.gateway.bodies import parse, read_json
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.teams.access import store_down
from gemma_fleet.teams.records import KeyRequest, TeamSpec, TeamUpdate, utcnow
from gemma_fleet.teams.store import NotFound, TeamExists

T = TypeVar("T")
BODY_LIMIT = 1 << 20  # admin bodies are small records
DEFAULT_USAGE_DAYS = 7


async def _store(call: Awaitable[T]) -> T:
    """A store call, its failures as HTTP answers."""
    try:
        return await call
    except NotFound as exc:
        raise ApiError(404, str(exc)) from exc
    except TeamExists as exc:
        raise ApiError(409, str(exc)) from exc
    except ValueError as exc:
        raise ApiError(400, str(exc)) from exc
    except Exception as exc:
        if store_down(exc):
            raise ApiError(503, "the team store (Redis) is unavailable", retry_after_s=5) from exc
        raise


def _json(data: BaseModel | Sequence[BaseModel], status: int = 200) -> JSONResponse:
    if isinstance(data, BaseModel):
        content: Any = data.model_dump(mode="json")
    else:
        content = {"object": "list", "data": [d.model_dump(mode="json") for d in data]}
    return JSONResponse(content, status_code=status, headers={"cache-control": "no-store"})


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ApiError(400, f"{name} must be a date like 2026-11-28, got {raw!r}") from exc


USAGE_QUERY = frozenset({"start", "end", "team", "model"})


def _period(request: Request) -> tuple[date, date]:
    """The usage report's days; a query parameter the report does not take is refused, as an
    unknown body field is (a misspelt `tem=` must not silently widen the report)."""
    unknown = sorted(set(request.query_params) - USAGE_QUERY)
    if unknown:
        raise ApiError(
            400, f"Unrecognized query parameter: {unknown[0]!r}", param=unknown[0] or None
        )
    today = utcnow().date()
    end = _day(request, "end", today)
    # An end in the first days of year 1 has no week before it (found by fuzzing: a 500).
    back = min(DEFAULT_USAGE_DAYS - 1, end.toordinal() - date.min.toordinal())
    return _day(request, "start", end - timedelta(days=back)), end


def _check_allowed(allowed: list[str] | None, served: frozenset[str]) -> None:
    """400 for an allow-list naming what the fleet does not serve: routing matches names
    exactly, so a misspelt one ("gemma-4-E2b") would leave the team refused (403) without
    saying why."""
    for i, name in enumerate(allowed or ()):
        if name not in served:
            raise ApiError(
                400,
                f"allowed_models[{i}]: {name!r} is no pool, model or alias this fleet serves; "
                f"known: {', '.join(sorted(served))}",
                param=f"allowed_models[{i}]",
            )


def admin_router(gate: TeamGate, body_timeout_s: float, served: frozenset[str]) -> APIRouter:
    """The admin routes and `/v1/usage`; bodies must arrive within `body_timeout_s`; a team's
    allow-list may name only what is `served` (pools, models, aliases)."""
    router = APIRouter()

    async def body(request: Request) -> dict[str, Any]:
        return await read_json(request, BODY_LIMIT, body_timeout_s)

    async def stored(call: Awaitable[T]) -> T:
        assert gate.access is not None  # every caller was let in only with a store
        return await _store(gate.access.watched(call))

    async def store_of(request: Request) -> Any:
        await gate.require_admin(request)
        assert gate.access is not None  # require_admin refuses when there is no store
        return gate.access.store

    @router.post("/admin/teams", status_code=201)
    async def create_team(request: Request) -> Response:
        store = await store_of(request)
        spec = parse(TeamSpec, await body(request))
        _check_allowed(spec.allowed_models, served)
        return _json(await stored(store.create_team(spec)), 201)

    @router.get("/admin/teams")
    async def list_teams(request: Request) -> Response:
        return _json(await stored((await store_of(request)).teams()))

    @router.get("/admin/teams/{name}")
    async def show_team(request: Request, name: str) -> Response:
        return _json(await stored((await store_of(request)).team(name)))

    @router.patch("/admin/teams/{name}")
    async def update_team(request: Request, name: str) -> Response:
        store = await store_of(request)
        update = parse(TeamUpdate, await body(request))
        _check_allowed(update.allowed_models, served)
        return _json(await stored(store.update_team(name, update)))

    @router.delete("/admin/teams/{name}", status_code=204)
    async def delete_team(request: Request, name: str) -> Response:
        await stored((await store_of(request)).delete_team(name))
        return Response(status_code=204)

    @router.post("/admin/teams/{name}/keys", status_code=201)
    async def issue_key(request: Request, name: str) -> Response:
        store = await store_of(request)
        ask = parse(KeyRequest, await body(request))
        if ask.expires_at is not None and ask.expires_at <= utcnow():
            raise ApiError(400, "expires_at must be in the future", param="expires_at")
        return _json(await stored(store.issue_key(name, ask)), 201)

    @router.get("/admin/teams/{name}/keys")
    async def list_keys(request: Request, name: str) -> Response:
        store = await store_of(request)
        await stored(store.team(name))
        return _json(await stored(store.keys(name)))

    @router.delete("/admin/keys/{key_id}")
    async def revoke_key(request: Request, key_id: str) -> Response:
        return _json(await stored((await store_of(request)).revoke_key(key_id)))

    @router.get("/admin/usage")
    async def usage(request: Request) -> Response:
        await gate.require_admin(request)
        assert gate.access is not None
        start, end = _period(request)
        rows = await stored(
            gate.access.meter.rows(
                start,
                end,
                team=request.query_params.get("team"),
                model=request.query_params.get("model"),
            )
        )
        return _json(rows)

    @router.get("/v1/usage")
    async def own_usage(request: Request) -> Response:
        """A team's own usage. Naming another team is refused, not silently narrowed."""
        identity = await gate.identify(request)
        if identity is None or gate.access is None:
            raise ApiError(404, "usage is metered only when team keys are required")
        asked = request.query_params.get("team")
        if asked is not None and asked != identity.team.name:
            raise ApiError(403, "a team key can read only its own team's usage", param="team")
        start, end = _period(request)
        rows = await stored(
            gate.access.meter.rows(
                start, end, team=identity.team.name, model=request.query_params.get("model")
            )
        )
        return _json(rows)

    return router
