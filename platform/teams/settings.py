"""How the gateway's team layer is configured: one typed model, read from the environment once
at start (the same variables locally, in Ray Serve replicas and in the Helm chart's pods). The
two credentials given as files are then followed while the gateway runs (teams/credentials.py).

| variable | meaning |
| --- | --- |
| `GEMMA_FLEET_AUTH` | `required` (default): every API call needs a team key; `disabled`: open |
| `REDIS_URL` | the store: `redis://host:port/db`, `rediss://` for TLS, `unix:///path.sock` |
| `REDIS_PASSWORD` | used when the URL carries no password (a Kubernetes Secret) |
| `REDIS_PASSWORD_FILE` | or a file holding it, read again for each new connection if changed |
| `GEMMA_FLEET_ADMIN_KEY` | the admin credential for `/admin/...`; unset: the admin API is off |
| `GEMMA_FLEET_METRICS_TOKEN` | bearer token `GET /metrics` needs; unset: open; blank: an error |
| `GEMMA_FLEET_ADMIN_KEY_FILE` | or a file holding the admin key, re-read when it changes |
| `GEMMA_FLEET_METRICS_TOKEN_FILE` | or a file holding the metrics token, re-read likewise |
| `GEMMA_FLEET_BOOTSTRAP_TEAMS` | a YAML file of teams and keys applied at start |
| `GEMMA_FLEET_REDIS_DOWN` | `fail-closed` (default) or `serve-cached-keys` (see docs/teams.md) |
| `GEMMA_FLEET_REDIS_TIMEOUT_S` | bound on every store call, queueing included (default 2 s) |
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from gemma_fleet.teams.credentials import (
    check_credential,
    read_credential_file,
    read_password_file,
)
from gemma_fleet.teams.limits import LEASE_S


class RedisDownPolicy(StrEnum):
    # Nothing is served without the store: no key can be checked, no limit enforced.
    FAIL_CLOSED = "fail-closed"
    # Keys that authenticated within `cached_key_ttl_s` keep working, without limits; usage is
    # buffered and written when the store is back.
    SERVE_CACHED_KEYS = "serve-cached-keys"


class TeamsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    auth_required: bool = True
    redis_url: SecretStr | None = None
    # The Redis password from REDIS_PASSWORD_FILE (the URL then carries none): the value read at
    # start, and the file, which new connections follow so Redis's password can be rotated.
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    admin_key: SecretStr | None = None
    metrics_token: SecretStr | None = None
    # Where the credential above came from when it is a file, which the gateway then follows
    # (teams/credentials.py): a mounted Secret can be rotated without restarting the pod.
    admin_key_file: Path | None = None
    metrics_token_file: Path | None = None
    bootstrap_file: Path | None = None
    redis_down: RedisDownPolicy = RedisDownPolicy.FAIL_CLOSED
    # Generous for a loopback round trip, but a burst queues for pooled connections inside this
    # bound; a dead Redis is answered 503 within it (later while the event loop runs late:
    # loop_lag.py).
    timeout_s: float = Field(2.0, gt=0, le=30)
    cached_key_ttl_s: float = Field(300, gt=0)
    retry_after_s: int = Field(5, ge=1, description="what a 503 tells clients while Redis is down")
    lease_s: float = Field(
        LEASE_S, gt=0, description="a concurrency slot's lease, renewed every third of it"
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TeamsSettings:
        """Settings from environment variables; a bad value raises ValueError naming it."""
        auth = env.get("GEMMA_FLEET_AUTH", "required").strip().lower()
        if auth not in ("required", "disabled"):
            raise ValueError(f"GEMMA_FLEET_AUTH must be 'required' or 'disabled', got {auth!r}")
        url = env.get("REDIS_URL") or None
        password_file = env.get("REDIS_PASSWORD_FILE") or None
        password = None
        if password_file is not None:
            if env.get("REDIS_PASSWORD"):
                raise ValueError("set REDIS_PASSWORD or REDIS_PASSWORD_FILE, not both")
            if url and urlsplit(url).password:
                raise ValueError(
                    "REDIS_URL carries a password and REDIS_PASSWORD_FILE is set: give one"
                )
            password = read_password_file("REDIS_PASSWORD_FILE", Path(password_file))
        elif url and env.get("REDIS_PASSWORD"):
            url = with_password(url, env["REDIS_PASSWORD"])
        try:
            return cls(
                auth_required=auth == "required",
                redis_url=url,
                redis_password=password,
                redis_password_file=password_file,
                admin_key=_credential(env, "GEMMA_FLEET_ADMIN_KEY"),
                admin_key_file=env.get("GEMMA_FLEET_ADMIN_KEY_FILE") or None,
                # Blank would leave /metrics (every team's counters) open where a token was meant.
                metrics_token=_credential(env, "GEMMA_FLEET_METRICS_TOKEN", blank_ok=False),
                metrics_token_file=env.get("GEMMA_FLEET_METRICS_TOKEN_FILE") or None,
                bootstrap_file=env.get("GEMMA_FLEET_BOOTSTRAP_TEAMS") or None,
                redis_down=env.get("GEMMA_FLEET_REDIS_DOWN", RedisDownPolicy.FAIL_CLOSED),
                timeout_s=env.get("GEMMA_FLEET_REDIS_TIMEOUT_S", 2.0),
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"team settings: {first['loc'][0]}: {first['msg']}") from None

    @property
    def store_needed(self) -> bool:
        return self.auth_required or self.admin_key is not None


def _credential(env: Mapping[str, str], name: str, *, blank_ok: bool = True) -> str | None:
    """The credential `name` sets, from `env[name]` or from the file `env[name + "_FILE"]`
    (teams/credentials.py), without the whitespace around it; None when neither is set, or
    when the variable is blank and `blank_ok`. ValueError naming the variable when it cannot
    be one, or when both are set. The error never quotes the value."""
    file_name = f"{name}_FILE"
    path = env.get(file_name) or None
    if name in env and path is not None:
        raise ValueError(f"set {name} or {file_name}, not both")
    if path is not None:
        return read_credential_file(file_name, Path(path))
    if name not in env:
        return None
    if not env[name].strip() and blank_ok:
        return None
    return check_credential(name, env[name])


def with_password(url: str, password: str) -> str:
    """`url` with `password` filled in, unless the URL already has one."""
    parts = urlsplit(url)
    if parts.password or parts.scheme == "unix":
        return url
    user = quote(parts.username or "", safe="")
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
