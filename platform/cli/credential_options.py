"""Credentials the client commands send (`teams`, `keys`, `usage`, `loadtest`), given either as
a value (`--admin-key`, or its variable) or as a file (`--admin-key-file`, or its variable).

The file form is what the chart's pods hold: the admin key and metrics token are mounted Secret
files, named by GEMMA_FLEET_ADMIN_KEY_FILE and GEMMA_FLEET_METRICS_TOKEN_FILE, so a command run
inside one of them finds the current credential without it ever being typed, echoed or shown in
`ps`. The file is read with the gateway's own rules, so a key the gateway would refuse at start
is refused here with the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gemma_fleet.cli.errors import CliError
from gemma_fleet.teams.credentials import read_credential_file


def file_option(option: str, variable: str, what: str) -> Any:
    """The `--X-file` option (variable `X_FILE`) beside a credential option `--X`."""
    return typer.Option(
        None,
        f"{option}-file",
        envvar=f"{variable}_FILE",
        help=f"a file holding {what} (e.g. a mounted Secret), instead of {option}",
        show_default=False,
        dir_okay=False,
    )


def credential_from(
    value: str | None, path: Path | None, *, option: str, variable: str
) -> str | None:
    """The credential given as `value` or in the file `path`; None when neither is given.
    CliError when both are, or when the file cannot be read or cannot be a credential."""
    if value is not None and path is not None:
        raise CliError(
            f"{option} ({variable}) and {option}-file ({variable}_FILE) are both set: give one"
        )
    if path is None:
        return value
    try:
        return read_credential_file(f"{option}-file", path)
    except ValueError as exc:
        raise CliError(str(exc)) from None
