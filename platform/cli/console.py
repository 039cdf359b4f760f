"""The console every command prints through."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Wide enough for the widest table a command prints (the usage report, the VRAM matrix).
PIPED_WIDTH = 200


def new_console() -> Console:
    """A terminal's own width; piped (a file, a CI log, `kubectl exec` without -t), rich would
    fold every table to 80 columns and split headers into fragments ("reque" over "sts"), so
    the output gets PIPED_WIDTH instead. COLUMNS, when set, wins either way."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return Console()
    return Console(width=PIPED_WIDTH)
