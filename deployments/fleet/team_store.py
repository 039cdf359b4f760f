"""The local fleet's team store: an embedded redis-server, an admin key and one team, `local`,
with a key - so a laptop fleet authenticates and meters exactly like a cluster does.

Keys live in the fleet's state folder (owner-only files) and are reused on the next start; the
gateway replicas find the store through the same environment variables a Kubernetes pod gets
(the Ray nodes this process starts inherit them).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from gemma_fleet.deployments.fleet.environment import scoped_environment
from gemma_fleet.teams.embedded import EmbeddedRedis
from gemma_fleet.teams.keys import new_key

LOCAL_TEAM = "local"


@dataclass(frozen=True)
class LocalTeams:
    """What a local user needs to call the fleet; all None when auth is off."""

    api_key: str | None = None
    admin_key: str | None = None
    redis_url: str | None = None


def _secret_file(path: Path, make: Callable[[], str]) -> str:
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


def _embedded_redis(state_dir: Path) -> EmbeddedRedis:
    return EmbeddedRedis(state_dir / "redis")


def store_in_use(state_dir: Path) -> Path | None:
    """The socket of a running fleet's team store in `state_dir`, or None when nothing
    listens there (a socket file a fleet that is gone left behind does not count: the next
    start replaces it). Lets a command refuse before it starts anything (local_team_store
    would refuse too)."""
    redis = _embedded_redis(state_dir)
    return redis.socket_path if redis.listening() else None


@contextmanager
def local_team_store(
    state_dir: Path, *, auth: bool = True, redis_url: str | None = None
) -> Iterator[LocalTeams]:
    """Run the store for the duration of the block (auth off: nothing runs, the API is open).

    `redis_url` names a Redis someone else runs (a fault test kills and restarts one under
    load); the embedded one is not started then."""
    if not auth:
        with scoped_environment({"GEMMA_FLEET_AUTH": "disabled"}):
            yield LocalTeams()
        return
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    admin_key = _secret_file(state_dir / "admin-key", lambda: secrets.token_urlsafe(32))
    api_key = _secret_file(state_dir / "local-team-key", lambda: new_key().key)
    bootstrap = state_dir / "bootstrap-teams.yaml"
    bootstrap.touch(mode=0o600)
    bootstrap.write_text(yaml.safe_dump({"teams": [{"name": LOCAL_TEAM, "keys": [api_key]}]}))
    redis = _embedded_redis(state_dir) if redis_url is None else None
    url = redis.start() if redis is not None else str(redis_url)
    env = {
        "GEMMA_FLEET_AUTH": "required",
        "REDIS_URL": url,
        "GEMMA_FLEET_ADMIN_KEY": admin_key,
        "GEMMA_FLEET_BOOTSTRAP_TEAMS": str(bootstrap),
    }
    try:
        with scoped_environment(env):
            yield LocalTeams(api_key=api_key, admin_key=admin_key, redis_url=url)
    finally:
        if redis is not None:
            redis.stop()
