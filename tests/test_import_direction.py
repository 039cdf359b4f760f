"""The import direction of docs/architecture.md, checked on the source.

Every `gemma_fleet` import in platform/, deployments/ and autoscaler/ (top-level, inside
functions and under TYPE_CHECKING alike: a lazy import is still a dependency) is read from the
syntax tree and mapped to the part of the system it lands in. A part may import only the parts
MAY_IMPORT lists for it. A new arrow is a design decision: add it here and to the diagram's
"Import direction" section together, or move the code so the arrow is not needed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Folder -> the package it is installed as (setup.py maps `gemma_fleet` onto platform/).
SOURCES = {
    "platform": "gemma_fleet",
    "deployments": "gemma_fleet.deployments",
    "autoscaler": "gemma_fleet.autoscaler",
}

# Parts are gemma_fleet's subpackages and top-level modules; deployments/ is split one level
# further, since its folders (engines, pools, fleet...) are layers of their own.
MAY_IMPORT: dict[str, set[str]] = {
    "deployments": set(),  # the folder's own __init__
    "config_file": set(),
    "catalog": {"config_file"},
    "vram": {"catalog"},
    "telemetry": set(),
    "teams": {"config_file"},
    "routing": {"catalog"},
    "deployments.checkpoints": {"catalog"},
    "deployments.engines": {"catalog", "vram", "telemetry"},
    "deployments.pools": {"catalog", "config_file", "vram", "deployments.engines"},
    "deployments.chart": {"catalog", "vram"},
    "gateway": {
        "catalog",
        "vram",
        "teams",
        "telemetry",
        "routing",
        "deployments.pools",
        "deployments.engines",
    },
    "deployments.fleet": {
        "teams",
        "gateway",
        "deployments.checkpoints",
        "deployments.pools",
    },
    # Beside the gateway, not behind it: it reads pool specs and capacity from the simulator's
    # parts, and never imports the request path.
    "autoscaler": {"config_file", "vram", "deployments.engines", "deployments.pools"},
    "loadtest": {"config_file", "teams", "deployments.fleet"},
    "cli": {
        "catalog",
        "vram",
        "autoscaler",
        "loadtest",
        "deployments.checkpoints",
        "deployments.pools",
        "deployments.fleet",
        "teams",  # the gateway's rules for a credential file, for the client commands
    },
}


def part_of(module: str) -> str:
    """The part of the system a `gemma_fleet...` module belongs to."""
    names = module.split(".")[1:]
    if names[0] == "deployments" and len(names) > 1:
        return f"deployments.{names[1]}"
    return names[0]


def source_modules() -> Iterator[tuple[Path, str]]:
    """Every Python file of the package with its module name."""
    for folder, package in SOURCES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield path, ".".join([package, *parts])


def imported_modules(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, module) for each gemma_fleet module `path` imports, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join([*base, node.module] if node.module else base)]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            if name.startswith("gemma_fleet."):
                yield node.lineno, name


def test_every_part_imports_only_what_the_architecture_allows() -> None:
    offences = []
    for path, module in source_modules():
        here = part_of(module)
        assert here in MAY_IMPORT, f"{module}: part {here!r} is missing from MAY_IMPORT"
        for line, target in imported_modules(path, module):
            there = part_of(target)
            if there != here and there not in MAY_IMPORT[here]:
                offences.append(f"{path.relative_to(REPO)}:{line}: {here} imports {there}")
    assert not offences, "imports against docs/architecture.md:\n" + "\n".join(offences)


def test_the_allowed_arrows_have_no_cycle() -> None:
    """The table itself must run one way, or it could permit a cycle between parts."""
    done: set[str] = set()

    def visit(part: str, path: tuple[str, ...]) -> None:
        if part in path:
            pytest.fail("MAY_IMPORT has a cycle: " + " -> ".join([*path, part]))
        if part in done:
            return
        for below in MAY_IMPORT[part]:
            visit(below, (*path, part))
        done.add(part)

    for part in MAY_IMPORT:
        visit(part, ())


def test_the_check_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """An import inside a function, or written relatively, still counts as an arrow."""
    path = tmp_path / "policy.py"
    path.write_text(
        "def choose():\n"
        "    from gemma_fleet.gateway import service\n"
        "    from ..teams import store\n"
    )
    found = [target for _, target in imported_modules(path, "gemma_fleet.routing.policy")]
    assert [part_of(t) for t in found] == ["gateway", "teams"]
