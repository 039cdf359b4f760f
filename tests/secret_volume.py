"""A folder laid out and updated the way the kubelet keeps a mounted Secret volume (its
AtomicWriter): each version of the files in a hidden, timestamped folder; `..data` a symlink to
the current one; each key a symlink through `..data`. An update writes a new folder and swaps
`..data` with one rename, so a reader sees the old files or the new ones, never a mix, and the
path a pod was given (`<folder>/<key>`) never changes. No Kubernetes here: this is the file
behaviour the chart's pods get (the kubelet's own update lag, about a minute, is not)."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_versions = itertools.count()


class SecretVolume:
    def __init__(self, root: Path, data: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.update(data)

    def path(self, key: str) -> Path:
        """The file a pod reads for `key` (the path its `..._FILE` variable names)."""
        return self.root / key

    def update(self, data: dict[str, str]) -> None:
        """Replace every key's content at once, as the kubelet does when the Secret changes."""
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        version = self.root / f"..version_{next(_versions)}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_text(value)
        staged = self.root / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.root / "..data")  # the one atomic step
        for key in data:
            link = self.root / key
            if not link.is_symlink():
                link.symlink_to(Path("..data") / key)
        if old is not None:
            shutil.rmtree(old)
