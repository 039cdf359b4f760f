"""Who is calling, and may they: the HTTP side of the team layer.

Clients present a team key as `Authorization: Bearer <key>` (OpenAI SDKs) or `x-api-key: <key>`
(Anthropic SDKs); administrators present GEMMA_FLEET_ADMIN_KEY the same way on `/admin/...`;
scrapers present GEMMA_FLEET_METRICS_TOKEN as `Authorization: Bearer` on `/metrics` when it is set.
Store errors become HTTP answers here: 401 for a bad key, 429 with Retry-After and the minute's
standing (the app writes it as rate-limit headers) for a limit, 503 with Retry-After when Redis
is down (fail-closed).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from pydantic import SecretStr

from gemma_fleet.gateway.classify import Classification
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.ratelimit_headers import ratelimit_headers
from gemma_fleet.gateway.service import Caller
from gemma_fleet.teams.access import StoreUnavailable, TeamAccess, Ticket, Unauthenticated
from gemma_fleet.teams.bootstrap import BootstrapFile, apply_bootstrap, read_bootstrap
from gemma_fleet.teams.credentials import Credential, CredentialUnavailable, read_password_file
from gemma_fleet.teams.limits import LimitExceeded, RequestTooLarge
from gemma_fleet.teams.loop_lag import CEILING as LAG_CEILING
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.settings import TeamsSettings
from gemma_fleet.teams.store import Identity, TeamStore

log = logging.getLogger(__name__)

# OpenAI's `code` for each kind of refusal, so SDK users can branch on it.
_LIMIT_CODES = {
    "token_budget": "insufficient_quota",
    "concurrent_requests": "concurrency_limit_exceeded",
}


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


def limit_error(exc: LimitExceeded) -> ApiError:
    limit = exc.limit.replace("_", " ")
    if exc.fits_smaller:
        # Room is left, only not for this reservation: say so, or a client with 80 tokens of
        # budget left waits a month rather than asking for 50.
        message = (
            f"team {limit} limit: {exc.used:,} of {exc.allowed:,} used, {exc.allowed - exc.used:,}"
            f" left, and this request reserves {exc.requested:,} (its prompt and output limit);"
            f" ask for fewer output tokens or retry after {exc.retry_after_s} s"
        )
    else:
        message = (
            f"team {limit} limit reached ({exc.used:,} of {exc.allowed:,}); "
            f"retry after {exc.retry_after_s} s"
        )
    return ApiError(
        429,
        message,
        code=_LIMIT_CODES.get(exc.limit, "rate_limit_exceeded"),
        retry_after_s=exc.retry_after_s,
        window=exc.window,
    )


# A request whose own estimate exceeds a token limit can never be admitted, however long the
# client waits. OpenAI answers 429 "Request too large" for tokens per minute, but a 429 is what
# every generic retry wrapper (and SDKs without x-should-retry) retries, forever here. A 400 is
# the status no client retries, and says what is true: this request, as sent, must change
# (as OpenAI's own 400 context_length_exceeded does). x-should-retry: false tells the official
# OpenAI and Anthropic SDKs the same in so many words.
def too_large_error(exc: RequestTooLarge, period: str) -> ApiError:
    if exc.limit == "token_budget":
        limit = f"whole token budget per {period}"
    else:
        limit = "tokens per minute limit"
    return ApiError(
        400,
        f"request too large: it alone needs {exc.requested:,} tokens (estimated prompt plus "
        f"max_tokens for each of its n choices, of each prompt in a batch), more than the "
        f"team's {limit} allows ({exc.allowed:,}); lower max_tokens or n, or shorten the "
        f"prompt or the batch",
        param="max_tokens",
        code="request_too_large",
        extra_headers={"x-should-retry": "false"},
    )


def store_error(exc: StoreUnavailable) -> ApiError:
    return ApiError(503, str(exc), code="store_unavailable", retry_after_s=exc.retry_after_s)


@dataclass(frozen=True)
class Admitted:
    """A request the team's limits let in, with what the gateway estimated it needs."""

    ticket: Ticket
    classified: Classification


class TeamGate:
    """Authentication and admission for the API routes; `access` None means auth is off.
    `metrics` None leaves `/metrics` open; `admin` None turns the admin API off."""

    def __init__(
        self,
        access: TeamAccess | None,
        admin: Credential | None = None,
        metrics: Credential | None = None,
    ) -> None:
        self.access = access
        self._admin = admin
        self._metrics = metrics

    @property
    def metrics_protected(self) -> bool:
        return self._metrics is not None

    async def identify(self, request: Request) -> Identity | None:
        if self.access is None:
            return None
        try:
            return await self.access.authenticate(presented_key(request))
        except Unauthenticated as exc:
            raise ApiError(401, str(exc), code="invalid_api_key") from exc
        except StoreUnavailable as exc:
            raise store_error(exc) from exc

    async def listing_scope(self, request: Request) -> frozenset[str] | None:
        """What `/v1/models` lists for this request: the team's allow-list when it presents a
        key (checked as on any route: a bad one is a 401), None (everything) when it presents
        none, when auth is off, or when the team store cannot be reached (the list is open)."""
        if self.access is None or presented_key(request) is None:
            return None
        try:
            identity = await self.identify(request)
        except ApiError as exc:
            if exc.status == 401:
                raise
            return None
        return None if identity is None else identity.team.allowed()

    def caller(self, identity: Identity | None, admitted: list[Admitted]) -> Caller:
        """The Caller the gateway serves: the team's allow-list, and an admission that puts
        its ticket in `admitted` (so the request can be settled however it ends)."""
        if identity is None or self.access is None:
            return Caller()
        access = self.access

        async def admit(classified: Classification) -> None:
            try:
                ticket = await access.admit(identity, classified.needs.total_tokens)
                admitted.append(Admitted(ticket, classified))
            except LimitExceeded as exc:
                raise limit_error(exc) from exc
            except RequestTooLarge as exc:
                raise too_large_error(exc, identity.team.limits.budget_period) from exc
            except StoreUnavailable as exc:
                raise store_error(exc) from exc

        async def check() -> None:
            try:
                await access.check(identity)
            except LimitExceeded as exc:
                raise limit_error(exc) from exc
            except StoreUnavailable as exc:
                raise store_error(exc) from exc

        return Caller(allowed_models=identity.team.allowed(), admit=admit, check=check)

    async def admit_count(self, identity: Identity | None) -> None:
        """Hold a token count (/v1/messages/count_tokens, /v1/responses/input_tokens) to the
        team's token-counting requests per minute, one counter for both (429 when spent; 503
        when Redis is down under fail-closed)."""
        if identity is None or self.access is None:
            return
        try:
            await self.access.admit_count(identity)
        except LimitExceeded as exc:
            raise limit_error(exc) from exc
        except StoreUnavailable as exc:
            raise store_error(exc) from exc

    async def require_admin(self, request: Request) -> None:
        """401 unless the request carries the admin credential (compared in constant time)."""
        if self._admin is None:
            raise ApiError(404, "the admin API is off: set GEMMA_FLEET_ADMIN_KEY to enable it")
        if self.access is None:
            raise ApiError(503, "the admin API needs the team store (REDIS_URL)")
        admin_key = await _current(self._admin, "admin")
        presented = presented_key(request) or ""
        if not hmac.compare_digest(presented.encode(), admin_key.encode()):
            raise ApiError(401, "admin routes need the admin credential", code="invalid_api_key")

    async def require_metrics(self, request: Request) -> None:
        """401 unless `/metrics` is open or the request carries the metrics token as
        `Authorization: Bearer` (compared in constant time). Prometheus and the fleet's own
        scrapers send it that way; a team key is never it."""
        if self._metrics is None:
            return
        token = await _current(self._metrics, "metrics")
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            message = "GET /metrics needs Authorization: Bearer <GEMMA_FLEET_METRICS_TOKEN>"
            raise metrics_refusal(message + "; none was sent")
        if not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise metrics_refusal("GET /metrics: the bearer token is not GEMMA_FLEET_METRICS_TOKEN")


async def _current(credential: Credential, what: str) -> str:
    """The credential's value, or a 503 while its file cannot be used: a fault of this
    deployment, not of the caller, and the log says which file and why (not the caller)."""
    try:
        return await credential.current()
    except CredentialUnavailable as exc:
        raise ApiError(
            503,
            f"the gateway cannot read its {what} credential now; its log says why",
            code="credential_unavailable",
        ) from exc


def metrics_refusal(message: str) -> ApiError:
    # WWW-Authenticate says which scheme to retry with (RFC 6750 section 3).
    return ApiError(
        401, message, code="invalid_metrics_token", extra_headers={"www-authenticate": "Bearer"}
    )


def success_headers(admitted: list[Admitted], *, anthropic: bool) -> Mapping[str, str]:
    """Where the team's minute stands after admitting this request, in the client's dialect."""
    if not admitted or admitted[0].ticket.admission is None:
        return {}
    return ratelimit_headers(admitted[0].ticket.admission.window, anthropic=anthropic)


class GateError(RuntimeError):
    """The team layer cannot start as configured; the message says what to set."""


def open_gate(settings: TeamsSettings, served: frozenset[str] | None = None) -> TeamGate:
    """The gate a gateway process serves with: connected to REDIS_URL, bootstrap file applied
    (a team allowed a name not `served` is applied, with a warning: a typo must not stop the
    gateway). Called once at start (not on an event loop: the bootstrap runs on a loop of its
    own)."""
    metrics = _credential(
        "GEMMA_FLEET_METRICS_TOKEN", settings.metrics_token, settings.metrics_token_file
    )
    if not settings.store_needed:
        return TeamGate(None, metrics=metrics)
    if settings.redis_url is None:
        raise GateError(
            "team keys are required (GEMMA_FLEET_AUTH=required) but REDIS_URL is not set; "
            "point it at Redis, or set GEMMA_FLEET_AUTH=disabled for an open endpoint"
        )
    url = settings.redis_url.get_secret_value()
    password = _redis_password(settings)
    if settings.bootstrap_file is not None:
        bootstrap = read_bootstrap(settings.bootstrap_file)
        if served is not None:
            _warn_unserved(bootstrap, served, settings.bootstrap_file)

        async def apply() -> None:
            redis = connect(url, password=password, max_connections=2, timeout_s=5.0)
            try:
                await apply_bootstrap(TeamStore(redis), bootstrap)
            finally:
                await redis.aclose()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, apply()).result()
    # TeamAccess bounds each call by the settings' timeout, stretched while the event loop runs
    # late; the client's own timeouts must not cut in first.
    redis = connect(url, password=password, timeout_s=settings.timeout_s * LAG_CEILING)
    access = TeamAccess(redis, settings)
    admin = _credential("GEMMA_FLEET_ADMIN_KEY", settings.admin_key, settings.admin_key_file)
    return TeamGate(access, admin, metrics)


def _warn_unserved(bootstrap: BootstrapFile, served: frozenset[str], path: Path) -> None:
    for team in bootstrap.teams:
        for name in team.allowed_models:
            if name not in served:
                log.warning(
                    "bootstrap file %s: team %r is allowed %r, which is no pool, model or alias "
                    "this fleet serves: the team cannot call it (names match exactly)",
                    path,
                    team.name,
                    name,
                )


def _redis_password(settings: TeamsSettings) -> Credential | None:
    """The Redis password followed in REDIS_PASSWORD_FILE, when the settings name one."""
    if settings.redis_password is None or settings.redis_password_file is None:
        return None
    return Credential(
        "REDIS_PASSWORD_FILE",
        settings.redis_password.get_secret_value(),
        settings.redis_password_file,
        read=read_password_file,
    )


def _credential(name: str, value: SecretStr | None, path: Path | None) -> Credential | None:
    """The gate's credential set by `name` (from settings that have read and checked it), followed
    in its file when it came from one."""
    if value is None:
        return None
    if path is None:
        return Credential(name, value.get_secret_value())
    return Credential(f"{name}_FILE", value.get_secret_value(), path)
