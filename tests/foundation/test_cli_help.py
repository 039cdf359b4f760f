"""`gemma-fleet --help` and its groups' --help as a user reads them: a subprocess of the command."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("gemma-fleet", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("group", [[], ["teams"], ["keys"], ["checkpoints"]])
def test_the_command_list_has_one_line_per_command(group: list[str]) -> None:
    """On a wide terminal each command's summary fits its row. typer keeps a docstring's line
    breaks in the list, which split `drain`, `drain-node` and `teams update` mid-sentence."""
    assert EXE is not None, "gemma-fleet is not installed next to this interpreter"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    out = subprocess.run(
        [EXE, *group, "--help"], capture_output=True, text=True, timeout=60, env=env, check=True
    ).stdout
    panel = out.split("Commands")[1].splitlines()[1:]
    rows = [line for line in panel if line.startswith("│")]
    assert rows, out
    continued = [row for row in rows if row.startswith("│  ")]
    assert not continued, "\n".join(rows)
