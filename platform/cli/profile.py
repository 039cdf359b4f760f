"""`gemma-fleet profile`: VRAM profiles as a matrix, a list, one breakdown, or JSON."""

from __future__ import annotations

import json
from collections.abc import Collection
from itertools import product

import typer
from rich.console import Console
from rich.table import Table

from gemma_fleet.catalog import Catalog, load_catalog
from gemma_fleet.cli.console import new_console
from gemma_fleet.cli.errors import CliError
from gemma_fleet.vram import (
    DEFAULT_MAX_MODEL_LEN,
    GIB,
    KvDtype,
    ProfileError,
    ProfileRecord,
    RuntimeAssumptions,
    VramProfile,
    compute_profile,
    valid_tp_degrees,
)
from gemma_fleet.vram.claims import CLAIM_CONTEXT, check_claims


def _gib(n: int) -> str:
    return f"{n / GIB:.1f}"


def _check_name(kind: str, name: str | None, known: Collection[str]) -> None:
    if name is not None and name not in known:
        raise CliError(f"unknown {kind} {name!r}; known: {', '.join(known)}")


def _profiles(
    catalog: Catalog,
    models: list[str],
    gpus: list[str],
    quants: list[str],
    tp: int | None,
    max_model_len: int | None,
    kv_dtype: KvDtype,
    text_only: bool,
    runtime: RuntimeAssumptions,
    strict: bool,
) -> list[VramProfile]:
    """Every configuration in the cross product; with `strict`, an invalid one is an error
    (the user named it), otherwise it is skipped (it came from enumeration)."""
    out = []
    for model_name, gpu_name, quant_name in product(models, gpus, quants):
        model = catalog.model(model_name)
        tps = [tp] if tp is not None else valid_tp_degrees(model)
        for degree in tps:
            length = max_model_len
            if length is not None and not strict:
                length = min(length, model.context_length)
            try:
                out.append(
                    compute_profile(
                        model,
                        catalog.gpu(gpu_name),
                        catalog.quant(quant_name),
                        vocab_size=catalog.family.vocab_size,
                        tp=degree,
                        max_model_len=length,
                        kv_dtype=kv_dtype,
                        text_only=text_only,
                        runtime=runtime,
                    )
                )
            except ProfileError as exc:
                if strict:
                    raise CliError(str(exc)) from exc
    return out


def _matrix(console: Console, catalog: Catalog, profiles: list[VramProfile], title: str) -> None:
    """Rows model x quant, columns GPUs; each cell the smallest TP that fits."""
    table = Table(title=title, show_lines=False)
    table.add_column("model")
    table.add_column("quant")
    gpus = list(dict.fromkeys(p.gpu for p in profiles))
    for gpu in gpus:
        table.add_column(gpu, justify="center")
    best: dict[tuple[str, str, str], VramProfile] = {}
    for p in profiles:
        key = (p.model, p.quant, p.gpu)
        if p.fits and (key not in best or p.tp < best[key].tp):
            best[key] = p
    for model, quant in dict.fromkeys((p.model, p.quant) for p in profiles):
        cells = []
        for gpu in gpus:
            hit = best.get((model, quant, gpu))
            cells.append(
                "[red]-[/red]" if hit is None else f"TP{hit.tp} x{hit.max_concurrent_sequences}"
            )
        table.add_row(model, quant, *cells)
    console.print(table)
    console.print(
        "cell: smallest tensor-parallel degree that fits, x concurrent sequences at "
        "max_model_len; '-': no valid TP fits. Details: gemma-fleet profile --model M --gpu G"
    )


def _list(console: Console, profiles: list[VramProfile]) -> None:
    table = Table()
    for col in (
        "model",
        "gpu",
        "quant",
        "tp",
        "ctx",
        "weights/GPU GiB",
        "KV free GiB",
        "KV tokens",
        "seqs",
        "verdict",
    ):
        table.add_column(col)
    for p in profiles:
        table.add_row(
            p.model,
            p.gpu,
            p.quant,
            str(p.tp),
            f"{p.max_model_len:,}",
            _gib(p.weight_bytes_per_gpu),
            _gib(p.kv_free_bytes_per_gpu),
            f"{p.kv_capacity_tokens:,}",
            str(p.max_concurrent_sequences),
            "[green]fits[/green]" if p.fits else f"[red]{p.reason}[/red]",
        )
    console.print(table)


def _breakdown(console: Console, p: VramProfile) -> None:
    title = (
        f"{p.model} {p.quant} on {p.tp}x {p.gpu}, max_model_len {p.max_model_len:,}, "
        f"KV {p.kv_dtype.value}"
    )
    table = Table(title=title)
    table.add_column("term")
    table.add_column("whole model GiB", justify="right")
    table.add_column("per GPU GiB", justify="right")
    table.add_column("note")
    for t in p.weights:
        note = t.note + ("" if t.sharded else " (replicated)")
        table.add_row(f"weights: {t.name}", _gib(t.bytes), _gib(t.bytes_per_gpu(p.tp)), note)
    table.add_row(
        "activations (profile pass)",
        "",
        _gib(p.activation_bytes_per_gpu),
        f"{p.runtime.max_num_batched_tokens} tokens, {p.runtime.max_num_seqs} seqs",
    )
    table.add_row("CUDA graphs", "", _gib(p.cuda_graph_bytes_per_gpu), "assumed")
    table.add_row("CUDA context / NCCL", "", _gib(p.runtime_bytes_per_gpu), "assumed")
    table.add_row(
        "usable budget",
        "",
        _gib(p.budget_bytes_per_gpu),
        f"gpu_memory_utilization {p.runtime.gpu_memory_utilization}",
    )
    table.add_row("left for KV", "", _gib(p.kv_free_bytes_per_gpu), "")
    console.print(table)
    kv = p.kv
    console.print(
        f"KV: {kv.full_layers} full-attention layers grow {p.kv_bytes_per_token:,} B/token; "
        f"{kv.sliding_layers} sliding layers hold {kv.sliding_bytes_per_token:,} B/token up to "
        f"{kv.sliding_window} tokens; {kv.shared_layers} KV-shared layers hold none.\n"
        f"One {p.max_model_len:,}-token sequence: {p.kv_bytes_per_sequence / 1e6:,.1f} MB. "
        f"Capacity: {p.kv_capacity_tokens:,} tokens, {p.max_concurrent_sequences:,} sequences."
    )
    console.print(("[green]" if p.fits else "[red]") + p.reason)
    for w in p.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _claims(console: Console, catalog: Catalog, as_json: bool) -> None:
    verdicts = check_claims(catalog)
    if as_json:
        rows = [
            {
                "claim": v.claim.text,
                "model": v.claim.model,
                "quant": v.claim.quant,
                "claimed_gpu_gb": v.claim.gpu_memory_gb,
                "weight_gb": round(v.profile.weight_bytes / 1e9, 2),
                "min_gpu_gb": round(v.profile.min_gpu_memory_bytes / 1e9, 2),
                "holds": v.holds,
                "verdict": v.verdict,
            }
            for v in verdicts
        ]
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"Brief claims vs the VRAM model (one {CLAIM_CONTEXT:,}-token sequence)")
    for col in ("claim", "model", "quant", "claimed GB", "weights GB", "needs GB", "verdict"):
        table.add_column(col)
    for v in verdicts:
        table.add_row(
            v.claim.text,
            v.claim.model,
            v.claim.quant,
            f"{v.claim.gpu_memory_gb:g}",
            f"{v.profile.weight_bytes / 1e9:.1f}",
            f"{v.profile.min_gpu_memory_bytes / 1e9:.1f}",
            ("[green]" if v.holds else "[red]") + v.verdict,
        )
    console.print(table)


def profile_command(
    model: str | None = typer.Option(None, "--model", "-m", help="e.g. gemma-4-31B"),
    gpu: str | None = typer.Option(None, "--gpu", "-g", help="e.g. H100-80GB"),
    quant: str | None = typer.Option(None, "--quant", "-q", help="bf16, fp8, int8, q5_k_m, q4_k_m"),
    tp: int | None = typer.Option(None, "--tp", help="tensor-parallel degree"),
    max_model_len: int | None = typer.Option(
        None, "--max-model-len", help=f"context per sequence (default {DEFAULT_MAX_MODEL_LEN:,})"
    ),
    kv_dtype: str = typer.Option("bf16", "--kv-dtype", help="bf16 or fp8"),
    text_only: bool = typer.Option(False, "--text-only", help="no vision/audio encoders"),
    gpu_memory_utilization: float = typer.Option(0.9, "--gpu-memory-utilization"),
    as_json: bool = typer.Option(False, "--json", help="print a JSON list of profiles"),
    claims: bool = typer.Option(False, "--claims", help="check the brief's sizing claims"),
) -> None:
    """Which Gemma 4 size fits which GPU, at which quantization and TP, with what KV cache."""
    catalog = load_catalog()
    console = new_console()
    if claims:
        _claims(console, catalog, as_json)
        return
    _check_name("model", model, catalog.models)
    _check_name("GPU", gpu, catalog.gpus)
    _check_name("quantization", quant, catalog.quants)
    if kv_dtype not in KvDtype.__members__.values():
        raise CliError(f"--kv-dtype must be one of bf16, fp8; got {kv_dtype!r}")
    if max_model_len is not None and max_model_len < 1:
        raise CliError(f"--max-model-len must be a positive number of tokens, got {max_model_len}")
    if tp is not None and tp < 1:
        raise CliError(f"--tp must be at least 1, got {tp}")
    try:
        runtime = RuntimeAssumptions(gpu_memory_utilization=gpu_memory_utilization)
    except ProfileError as exc:
        raise CliError(f"--gpu-memory-utilization: {exc}") from exc
    unfiltered = model is None and gpu is None and quant is None and tp is None
    profiles = _profiles(
        catalog,
        [model] if model else list(catalog.models),
        [gpu] if gpu else list(catalog.gpus),
        [quant] if quant else list(catalog.quants),
        tp,
        max_model_len,
        KvDtype(kv_dtype),
        text_only,
        runtime,
        strict=model is not None,
    )
    if not profiles:
        raise CliError(f"no model allows tp {tp}")
    if as_json:
        print(json.dumps([ProfileRecord.of(p).model_dump() for p in profiles], indent=2))
    elif unfiltered:
        length = max_model_len or DEFAULT_MAX_MODEL_LEN
        title = f"Gemma 4 x GPU at max_model_len {length:,} (capped at each model's context)"
        _matrix(console, catalog, profiles, title)
    elif len(profiles) == 1:
        _breakdown(console, profiles[0])
    else:
        _list(console, profiles)
