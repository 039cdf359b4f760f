"""Shared by the fleet tests: which processes of a Ray session are still alive (/proc, Linux)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tree(roots: list[int]) -> dict[int, str]:
    """`roots` and every live descendant, with their command lines. Ray workers rename
    themselves (`ray::ServeReplica:...`) and are children of their node's raylet."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        names[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    found = {pid for pid in roots if _alive(pid)}
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found and _alive(pid)}
        grew = not children <= found
        found |= children
    found.discard(os.getpid())
    return {pid: names.get(pid, "") for pid in found}


@pytest.fixture
def alive() -> Callable[[int], bool]:
    return _alive


@pytest.fixture
def process_tree() -> Callable[[list[int]], dict[int, str]]:
    return _tree
