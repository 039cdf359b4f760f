"""What the Locust process is told, through its environment: the runner sets these variables,
and a user running plain `locust -f loadtest/locustfile.py` may set them by hand.

| variable | meaning |
| --- | --- |
| GEMMA_FLEET_LOADTEST_WORKLOAD | workload file (YAML) |
| GEMMA_FLEET_LOADTEST_SHAPE | a ShapeSpec as JSON, or a shape's name; unset: Locust's -u -r -t |
| GEMMA_FLEET_LOADTEST_DURATION | with a shape name: its duration (e.g. 10m) |
| GEMMA_FLEET_LOADTEST_USERS | with a shape name: its peak users |
| GEMMA_FLEET_LOADTEST_RECORDS | JSON-lines file to append one record per request to |
| GEMMA_FLEET_LOADTEST_KEYS | JSON {team: key}; else the team's key_env, else GEMMA_FLEET_API_KEY |
| GEMMA_FLEET_LOADTEST_TIMEOUT | seconds a request may take (default 300) |
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gemma_fleet.loadtest.shapes import SHAPES, ShapeSpec, parse_duration
from gemma_fleet.loadtest.workload import WorkloadFile, load_workload

PREFIX = "GEMMA_FLEET_LOADTEST_"
DEFAULT_KEY_ENV = "GEMMA_FLEET_API_KEY"


class LocustSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    workload_path: Path
    shape: ShapeSpec | None = None
    records: Path | None = None
    keys: dict[str, str] = Field(default_factory=dict, repr=False)
    timeout_s: float = Field(300.0, gt=0)

    def to_env(self) -> dict[str, str]:
        """The environment variables that carry these settings to a Locust process."""
        env = {
            PREFIX + "WORKLOAD": str(self.workload_path),
            PREFIX + "KEYS": json.dumps(self.keys),
            PREFIX + "TIMEOUT": str(self.timeout_s),
        }
        if self.shape is not None:
            env[PREFIX + "SHAPE"] = self.shape.model_dump_json()
        if self.records is not None:
            env[PREFIX + "RECORDS"] = str(self.records)
        return env

    def load_workload(self) -> WorkloadFile:
        return load_workload(self.workload_path)

    def key_of(self, team: str, workload: WorkloadFile, env: Mapping[str, str]) -> str | None:
        """The API key a team's virtual users send (None: no key, for an open gateway)."""
        if team in self.keys:
            return self.keys[team]
        entry = workload.team(team)
        return env.get(entry.key_env or DEFAULT_KEY_ENV) or env.get(DEFAULT_KEY_ENV)


def settings_from_env(env: Mapping[str, str], default_workload: Path) -> LocustSettings:
    """Read the settings a Locust process was started with; ValueError names the variable."""
    shape: ShapeSpec | None = None
    raw_shape = env.get(PREFIX + "SHAPE", "").strip()
    try:
        if raw_shape.startswith("{"):
            shape = ShapeSpec.model_validate_json(raw_shape)
        elif raw_shape:
            if raw_shape not in SHAPES:
                raise ValueError(f"unknown shape {raw_shape!r}; one of {', '.join(SHAPES)}")
            duration = parse_duration(env.get(PREFIX + "DURATION", "5m"))
            users = int(env.get(PREFIX + "USERS", "10"))
            shape = ShapeSpec(kind=raw_shape, duration_s=duration, users=users)
        keys = json.loads(env.get(PREFIX + "KEYS", "{}"))
        records = env.get(PREFIX + "RECORDS")
        return LocustSettings(
            workload_path=Path(env.get(PREFIX + "WORKLOAD") or default_workload),
            shape=shape,
            records=Path(records) if records else None,
            keys=keys,
            timeout_s=float(env.get(PREFIX + "TIMEOUT", "300")),
        )
    except (ValidationError, ValueError) as exc:
        raise ValueError(f"{PREFIX}* settings are invalid: {exc}") from exc
