"""Read a fleet file (YAML), check its shape, then check it against the catalog and VRAM model.

Loading is where a bad fleet is refused: a pool that names an unknown model or GPU, asks for an
invalid tensor-parallel degree, spans nodes, or does not fit its GPU never reaches Ray.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gemma_fleet.catalog import Catalog, load_catalog
from gemma_fleet.config_file import read_yaml
from gemma_fleet.deployments.pools.schema import FleetSpec
from gemma_fleet.deployments.pools.validate import fleet_errors


class FleetError(ValueError):
    """A fleet file cannot be used; the message names the file, the pool and the field."""


def shipped_fleets() -> dict[str, Path]:
    """The fleet files that ship with the package, by name (file name without `.yaml`)."""
    folder = Path(str(resources.files("gemma_fleet.deployments.pools.fleets")))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def default_fleet_path() -> Path:
    """The fleet `gemma-fleet up` starts when none is given."""
    return shipped_fleets()["default"]


def load_fleet(path: Path | str, catalog: Catalog | None = None) -> FleetSpec:
    """Load and fully validate the fleet file at `path` (a path, or a shipped fleet's name).
    Helm values for the chart are read too: their fleet is under the top-level `fleet:` key,
    so `plan` and `autoscale` can work on the very values a cluster is installed with."""
    path = Path(path)
    if not path.exists() and path.suffix == "" and str(path) in shipped_fleets():
        path = shipped_fleets()[str(path)]
    data = read_yaml(path, FleetError, "fleet file", mapping=False)
    source = str(path)
    if isinstance(data, dict) and "fleet" in data and "node_pools" not in data:
        data, source = data["fleet"], f"{path} (fleet:)"
    return parse_fleet(data, source=source, catalog=catalog)


def parse_fleet(data: Any, *, source: str = "fleet", catalog: Catalog | None = None) -> FleetSpec:
    """Validate already-parsed fleet data (a mapping as read from YAML)."""
    if not isinstance(data, dict):
        raise FleetError(f"{source}: top level must be a mapping with node_pools and model_pools")
    try:
        fleet = FleetSpec.model_validate(data)
    except ValidationError as exc:
        lines = [f"{_where(err['loc'], data)}: {_message(err)}" for err in exc.errors()]
        raise FleetError(_report(source, lines)) from None
    errors = fleet_errors(fleet, catalog or load_catalog())
    if errors:
        raise FleetError(_report(source, errors))
    return fleet


def _report(source: str, lines: list[str]) -> str:
    if len(lines) == 1:
        return f"{source}: {lines[0]}"
    return f"{source}: {len(lines)} problems\n" + "\n".join(f"  {line}" for line in lines)


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key (not a fleet file field)"
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """A pydantic location as a reader finds it in the file: list items by their `name`."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            name = (
                node[part].get("name")
                if isinstance(node, list) and isinstance(node[part], dict)
                else None
            )
            out += f"[{name}]" if isinstance(name, str) else f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out
