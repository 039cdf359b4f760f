"""`gemma-fleet teams|keys|usage`: administer teams through a running gateway's admin API.

Every command talks HTTP to `--url` with the admin credential (`--admin-key` or the
GEMMA_FLEET_ADMIN_KEY variable; `--admin-key-file` or GEMMA_FLEET_ADMIN_KEY_FILE, which the
chart's Ray pods already set; else the local fleet's `~/.gemma-fleet/admin-key`), so the same
commands manage a laptop fleet and a cluster.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from gemma_fleet.cli.console import new_console
from gemma_fleet.cli.credential_options import credential_from, file_option
from gemma_fleet.cli.errors import CliError

LOCAL_ADMIN_KEY = Path.home() / ".gemma-fleet" / "admin-key"

teams_app = typer.Typer(help="Create, change, list and delete teams.", no_args_is_help=True)
keys_app = typer.Typer(help="Issue, list and revoke a team's API keys.", no_args_is_help=True)

URL = typer.Option(
    "http://127.0.0.1:8000",
    "--url",
    envvar="GEMMA_FLEET_URL",
    help="the gateway's URL (a trailing /v1 is ignored)",
)
ADMIN_KEY = typer.Option(
    None,
    "--admin-key",
    envvar="GEMMA_FLEET_ADMIN_KEY",
    help="admin credential (default: the local fleet's ~/.gemma-fleet/admin-key)",
    show_default=False,
)
ADMIN_KEY_FILE = file_option("--admin-key", "GEMMA_FLEET_ADMIN_KEY", "the admin credential")
AS_JSON = typer.Option(False, "--json", help="print the API's JSON answer")


class AdminApi:
    """The admin API over HTTP; every failure becomes a one-line CliError."""

    def __init__(self, url: str, admin_key: str | None, admin_key_file: Path | None) -> None:
        admin_key = credential_from(
            admin_key, admin_key_file, option="--admin-key", variable="GEMMA_FLEET_ADMIN_KEY"
        )
        if admin_key is None and LOCAL_ADMIN_KEY.exists():
            admin_key = LOCAL_ADMIN_KEY.read_text().strip()
        if not admin_key:
            raise CliError(
                "no admin key: pass --admin-key or --admin-key-file, or set "
                "GEMMA_FLEET_ADMIN_KEY or GEMMA_FLEET_ADMIN_KEY_FILE"
            )
        # The admin API is at the root; `up` prints the OpenAI base URL (…/v1), which users
        # paste here, and loadtest's --host takes either.
        self._http = httpx.Client(
            base_url=url.rstrip("/").removesuffix("/v1"),
            headers={"authorization": f"Bearer {admin_key}"},
            timeout=30,
        )

    def call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        try:
            answer = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self._http.base_url}: {exc}") from exc
        if answer.status_code >= 400:
            try:
                message = answer.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = answer.text[:200]
            raise CliError(f"{method} {path}: {answer.status_code} {message}")
        return answer.json() if answer.content else None


def _limits(
    rpm: int | None,
    tpm: int | None,
    concurrent: int | None,
    budget: int | None,
    budget_period: str | None,
) -> dict[str, Any] | None:
    given = {
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "max_concurrent_requests": concurrent,
        "token_budget": budget,
        "budget_period": budget_period,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    return chosen or None


Columns = dict[str, str]  # header -> dotted path in the API's record
IDENTITY_COLUMNS = {"team", "id", "day", "model"}


def _show(console: Console, records: list[dict[str, Any]], columns: Columns, title: str) -> None:
    table = Table(title=title)
    for header in columns:
        # Names and ids are what the next command takes: whole on one line at any width.
        table.add_column(header, overflow="fold", no_wrap=header in IDENTITY_COLUMNS)
    for record in records:
        table.add_row(*(_cell(record, path) for path in columns.values()))
    console.print(table)


def _cell(record: dict[str, Any], column: str) -> str:
    value: Any = record
    for part in column.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or value == -1:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "all"
    return f"{value:,}" if isinstance(value, int) else str(value)


TEAM_COLUMNS = {
    "team": "name",
    "models": "allowed_models",
    "rpm": "limits.requests_per_minute",
    "tpm": "limits.tokens_per_minute",
    "at once": "limits.max_concurrent_requests",
    "budget": "limits.token_budget",
    "per": "limits.budget_period",
    "prio": "priority",
}


@teams_app.command("create")
def create_team(
    name: str = typer.Argument(..., help="team name (lowercase letters, digits, dashes)"),
    models: str | None = typer.Option(None, "--models", help="allowed pools/models/aliases, a,b"),
    rpm: int | None = typer.Option(None, "--rpm", help="requests per minute"),
    tpm: int | None = typer.Option(None, "--tpm", help="tokens per minute"),
    concurrent: int | None = typer.Option(None, "--concurrent", help="requests at once"),
    budget: int | None = typer.Option(None, "--budget", help="tokens per budget period"),
    budget_period: str | None = typer.Option(None, "--budget-period", help="day or month"),
    priority: int = typer.Option(0, "--priority", help="0-9, higher is more important"),
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """Create a team."""
    body: dict[str, Any] = {"name": name, "priority": priority}
    if models:
        body["allowed_models"] = [m.strip() for m in models.split(",") if m.strip()]
    limits = _limits(rpm, tpm, concurrent, budget, budget_period)
    if limits:
        body["limits"] = limits
    record = AdminApi(url, admin_key, admin_key_file).call("POST", "/admin/teams", body)
    _print(record, as_json, TEAM_COLUMNS, "team created")


@teams_app.command("update", short_help="Change a team: only the limits and fields given.")
def update_team(
    name: str = typer.Argument(...),
    models: str | None = typer.Option(None, "--models", help="allowed pools/models/aliases, a,b"),
    rpm: int | None = typer.Option(None, "--rpm"),
    tpm: int | None = typer.Option(None, "--tpm"),
    concurrent: int | None = typer.Option(None, "--concurrent"),
    budget: int | None = typer.Option(None, "--budget"),
    budget_period: str | None = typer.Option(None, "--budget-period"),
    priority: int | None = typer.Option(None, "--priority"),
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """Change a team: only what is given changes (a limit not named keeps its value; -1 makes a
    limit unlimited)."""
    body: dict[str, Any] = {}
    if models is not None:
        body["allowed_models"] = [m.strip() for m in models.split(",") if m.strip()]
    limits = _limits(rpm, tpm, concurrent, budget, budget_period)
    if limits:
        body["limits"] = limits
    if priority is not None:
        body["priority"] = priority
    if not body:
        raise CliError("nothing to change: give --models, a limit or --priority")
    record = AdminApi(url, admin_key, admin_key_file).call("PATCH", f"/admin/teams/{name}", body)
    _print(record, as_json, TEAM_COLUMNS, "team updated")


@teams_app.command("list")
def list_teams(
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """List every team with its limits."""
    _print(
        AdminApi(url, admin_key, admin_key_file).call("GET", "/admin/teams"),
        as_json,
        TEAM_COLUMNS,
        "teams",
    )


@teams_app.command("show")
def show_team(
    name: str,
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """Show one team."""
    _print(
        AdminApi(url, admin_key, admin_key_file).call("GET", f"/admin/teams/{name}"),
        as_json,
        TEAM_COLUMNS,
        name,
    )


@teams_app.command("delete")
def delete_team(
    name: str,
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
) -> None:
    """Delete a team and revoke all its keys (its usage history stays)."""
    AdminApi(url, admin_key, admin_key_file).call("DELETE", f"/admin/teams/{name}")
    new_console().print(f"team {name} deleted; its keys are revoked")


KEY_COLUMNS = {
    "id": "id",
    "team": "team",
    "name": "name",
    "created": "created_at",
    "expires": "expires_at",
    "revoked": "revoked_at",
}


@keys_app.command("create")
def create_key(
    team: str = typer.Option(..., "--team"),
    name: str = typer.Option("", "--name", help="what the key is for"),
    expires_in_days: float | None = typer.Option(None, "--expires-in-days"),
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """Issue a key. Its secret is printed once and cannot be shown again."""
    body: dict[str, Any] = {"name": name}
    if expires_in_days is not None:
        if expires_in_days <= 0:
            raise CliError("--expires-in-days must be positive")
        body["expires_at"] = (datetime.now(UTC) + timedelta(days=expires_in_days)).isoformat()
    issued = AdminApi(url, admin_key, admin_key_file).call(
        "POST", f"/admin/teams/{team}/keys", body
    )
    if as_json:
        print(json.dumps(issued, indent=2))
        return
    console = new_console()
    console.print(f"key {issued['id']} for team {team} (shown once, store it now):")
    print(issued["key"])


@keys_app.command("list")
def list_keys(
    team: str = typer.Option(..., "--team"),
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """List a team's keys (ids and dates; never secrets)."""
    keys = AdminApi(url, admin_key, admin_key_file).call("GET", f"/admin/teams/{team}/keys")
    _print(keys, as_json, KEY_COLUMNS, f"keys of {team}")


@keys_app.command("revoke")
def revoke_key(
    key_id: str,
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
) -> None:
    """Revoke a key by its id (the part after gfk_); the next request with it is refused."""
    record = AdminApi(url, admin_key, admin_key_file).call("DELETE", f"/admin/keys/{key_id}")
    new_console().print(f"key {record['id']} of team {record['team']} revoked")


USAGE_COLUMNS = {
    "day": "day",
    "team": "team",
    "model": "model",
    "requests": "requests",
    "prompt": "prompt_tokens",
    "completion": "completion_tokens",
    "images": "images",
    "audio s": "audio_seconds",
}


def usage_command(
    team: str | None = typer.Option(None, "--team"),
    model: str | None = typer.Option(None, "--model", help="catalog model, e.g. gemma-4-31B"),
    start: str | None = typer.Option(None, "--start", help="first day, YYYY-MM-DD"),
    end: str | None = typer.Option(None, "--end", help="last day, YYYY-MM-DD (default today)"),
    url: str = URL,
    admin_key: str | None = ADMIN_KEY,
    admin_key_file: Path | None = ADMIN_KEY_FILE,
    as_json: bool = AS_JSON,
) -> None:
    """Usage per team x model x day (default: the last 7 days)."""
    query = {"team": team, "model": model, "start": start, "end": end}
    params = {k: v for k, v in query.items() if v}
    rows = AdminApi(url, admin_key, admin_key_file).call("GET", "/admin/usage", params=params)
    _print(rows, as_json, USAGE_COLUMNS, "usage")


def _print(answer: Any, as_json: bool, columns: Columns, title: str) -> None:
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    records = answer["data"] if isinstance(answer, dict) and "data" in answer else [answer]
    _show(new_console(), records, columns, title)
