"""The processes a local fleet runs, read from /proc (Linux): which are alive, which descend
from the ones we started, and how much memory they hold.

Ray workers are children of their node's raylet and rename themselves
(`ray::ServeReplica:<app>:<deployment>`), so a fleet's processes are found by walking parent
links down from the PIDs it started, not by name. The fleet tests check that shutdown leaves
none behind; the soak and fault benchmarks sum their memory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def alive(pid: int) -> bool:
    """True when `pid` runs and is not a zombie waiting to be reaped."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return _after_name(stat)[0] != "Z"


def process_tree(roots: list[int]) -> dict[int, str]:
    """`roots` and every live descendant, with their command lines (arguments joined by
    spaces); the calling process is left out."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # it exited while we looked
            continue
        state, ppid = _after_name(stat)[:2]
        if state == "Z":  # exited, waiting to be reaped
            continue
        pid = int(entry.name)
        parents[pid] = int(ppid)
        commands[pid] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    found = {pid for pid in roots if pid in parents}
    while True:
        children = {pid for pid, ppid in parents.items() if ppid in found}
        if children <= found:
            break
        found |= children
    found.discard(os.getpid())
    return {pid: commands.get(pid, "") for pid in found}


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` (0 once it has exited)."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and all its live descendants."""
    return sum(rss_bytes(p) for p in process_tree([pid]))


def _after_name(stat: str) -> list[str]:
    # /proc/PID/stat is "pid (comm) state ppid ...", and comm may itself hold spaces or ")".
    return stat.rsplit(")", 1)[1].split()
