"""Teams and keys declared in a file (a Kubernetes Secret mounted into the gateway, or the local
fleet's first team), applied at start: teams are created or brought up to date, keys stored
hashed. Applying the same file twice changes nothing."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from gemma_fleet.config_file import load_model
from gemma_fleet.teams.keys import looks_like_key
from gemma_fleet.teams.records import Strict, TeamSpec
from gemma_fleet.teams.store import TeamStore


class BootstrapTeam(TeamSpec):
    keys: list[SecretStr] = Field(
        default_factory=list, description="plaintext keys to accept; only their hash is stored"
    )


class BootstrapFile(Strict):
    teams: list[BootstrapTeam] = Field(default_factory=list)


class BootstrapError(ValueError):
    pass


def read_bootstrap(path: Path) -> BootstrapFile:
    """Parse and check a bootstrap file; errors name the file and the field, never a key."""
    parsed = load_model(path, BootstrapFile, BootstrapError, "bootstrap file")
    for team in parsed.teams:
        for i, key in enumerate(team.keys):
            if not looks_like_key(key.get_secret_value()):
                raise BootstrapError(
                    f"{path}: teams[{team.name}].keys[{i}]: a key is 32-128 characters of "
                    "A-Z a-z 0-9 _ . -"
                )
    return parsed


async def apply_bootstrap(store: TeamStore, bootstrap: BootstrapFile) -> None:
    for team in bootstrap.teams:
        await store.upsert_team(TeamSpec(**team.model_dump(exclude={"keys"})))
        for key in team.keys:
            await store.register_key(team.name, key.get_secret_value())
