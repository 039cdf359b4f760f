"""`gemma-fleet checkpoints build`: tiny random-weight Gemma 4 checkpoints for vLLM's CPU build."""

from __future__ import annotations

from pathlib import Path

import typer

from gemma_fleet.cli.errors import CliError

checkpoints_app = typer.Typer(
    name="checkpoints",
    help="Tiny random-weight Gemma 4 checkpoints (offline, seconds, a few MB).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_VARIANTS = ("text", "moe", "kv-shared", "multimodal")


@checkpoints_app.callback()
def _group() -> None:
    """Keeps `build` a sub-command (typer collapses a lone command into its group)."""


@checkpoints_app.command("build")
def checkpoints_command(
    variant: str = typer.Option(..., "--variant", "-v", help=f"one of: {', '.join(_VARIANTS)}"),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="directory to write; default: a cache under $GEMMA_FLEET_CHECKPOINTS or "
        "~/.cache/gemma-fleet, reused when already built",
    ),
    seed: int = typer.Option(0, "--seed", help="weights seed; same seed, same weights"),
) -> None:
    """Build a tiny Gemma 4 checkpoint (weights, tokenizer, chat template, processor)."""
    if variant not in _VARIANTS:
        raise CliError(f"unknown variant {variant!r}; known: {', '.join(_VARIANTS)}")
    if out is not None and out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a directory")
    # Imported here: torch and transformers take seconds to import, and only this command
    # needs them.
    from gemma_fleet.deployments.checkpoints import (
        build_tiny_checkpoint,
        ensure_tiny_checkpoint,
        read_build_info,
    )

    path = (
        ensure_tiny_checkpoint(variant, seed=seed)
        if out is None
        else build_tiny_checkpoint(out, variant, seed=seed)
    )
    info = read_build_info(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    detail = (
        f" ({info.architecture}, like {info.imitates}, {info.parameters:,} parameters)"
        if info is not None
        else ""
    )
    typer.echo(f"{path}: tiny Gemma 4 '{variant}'{detail}, {size / 1e6:.1f} MB")
