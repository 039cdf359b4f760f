"""The `gemma-fleet` command: one sub-command per job, each in its own module."""

from __future__ import annotations

import sys

import typer

try:  # typer >= 0.20 vendors click; its usage errors are not the `click` package's
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import UsageError  # type: ignore[assignment]

from gemma_fleet.cli.autoscale import autoscale_command
from gemma_fleet.cli.checkpoints import checkpoints_app
from gemma_fleet.cli.drain import drain_command, drain_node_command
from gemma_fleet.cli.errors import CliError
from gemma_fleet.cli.loadtest import loadtest_command
from gemma_fleet.cli.plan import plan_command
from gemma_fleet.cli.profile import profile_command
from gemma_fleet.cli.teams import keys_app, teams_app, usage_command
from gemma_fleet.cli.up import up_command

app = typer.Typer(
    name="gemma-fleet",
    help="Serve the Gemma 4 family on Ray Serve and Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("plan")(plan_command)
app.command("profile")(profile_command)
app.command("up")(up_command)
app.command("autoscale")(autoscale_command)
# One-line summaries for the command list: typer keeps a docstring's line breaks there.
app.command("drain", short_help="Gateway: 503 to new requests; wait for the answers in flight.")(
    drain_command
)
app.command("drain-node", short_help="Move a Ray node's replicas to other nodes, then wait.")(
    drain_node_command
)
app.add_typer(checkpoints_app, name="checkpoints")
app.add_typer(teams_app, name="teams")
app.add_typer(keys_app, name="keys")
app.command("usage")(usage_command)
app.command("loadtest")(loadtest_command)


@app.callback()
def _root() -> None:
    """Keeps typer from collapsing a single command into the root."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes one line on stderr and exit status 2, never a traceback."""
    try:
        # Without standalone mode click returns a command's typer.Exit code instead of raising
        # it (so `loadtest --strict` and `drain` exited 0 when they meant 1 until this exited
        # with it).
        status = app(args=argv, standalone_mode=False)
    except CliError as exc:
        print(f"gemma-fleet: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except UsageError as exc:
        print(f"gemma-fleet: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    if isinstance(status, int) and status != 0:
        sys.exit(status)
