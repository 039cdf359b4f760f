"""Compare a GPU measurement (measure.py's JSON) with the simulator's roofline: results.md.

For each matmul stack the roofline predicts a memory time (the weight bytes one step reads,
over datasheet bandwidth x BANDWIDTH_EFFICIENCY) and a compute time (2 x parameters x tokens,
over datasheet FLOP/s x COMPUTE_EFFICIENCY); the stack measures their max. The report gives
the measured time against the prediction, and the efficiency the measurement implies
(bytes / time / datasheet bandwidth for decode, FLOPs / time / datasheet peak for prefill),
next to the constant the simulator uses. Whole-model prefills are compared with the
roofline's full step (attention and the per-step overhead included).

Reproduce: .venv/bin/python benchmarks/gpu_calibration/report.py MEASURED.json [MORE.json ...]
(writes results.md and results.json beside this file unless --out-dir says otherwise)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator.roofline import (
    BANDWIDTH_EFFICIENCY,
    COMPUTE_EFFICIENCY,
    FP8_COMPUTE_EFFICIENCY,
    GEMM_KERNEL_FLOOR_S,
    Roofline,
    ScheduledChunk,
)

HERE = Path(__file__).parent
# torch's device names -> catalog GPU names (the catalog names the product's SKUs).
GPU_NAMES = {"H200": "H200", "H100": "H100-80GB", "B200": "B200", "L40S": "L40S", "L4": "L4"}


def catalog_gpu(device_name: str, memory_gib: float) -> str:
    if "A100" in device_name:
        return "A100-80GB" if memory_gib > 50 else "A100-40GB"
    for key, name in GPU_NAMES.items():
        if key in device_name:
            return name
    raise SystemExit(f"no catalog GPU for device {device_name!r}: add it to GPU_NAMES")


def moe_kernel(record: dict[str, Any]) -> str | None:
    """How the record's routed experts ran; runs before measure.py recorded it looped."""
    if record.get("distinct_experts_per_layer") is None:
        return None
    return str(record.get("moe_kernel") or "loop")


def stack_row(record: dict[str, Any], gpu: str) -> dict[str, Any]:
    roof = Roofline.for_names(record["model"], gpu, record["format"])
    rows = record["rows"]
    lm_rows = rows if record["phase"] == "decode" else 1
    weight_bytes = roof.weight_bytes(rows)
    flops = roof.matmul_flops(rows, lm_rows)
    memory_s = weight_bytes / roof.bytes_per_s + roof.kernel_floor_s
    compute_s = flops / roof.flops_per_s
    measured = record["median_s"]
    peak_bytes = roof.bytes_per_s / BANDWIDTH_EFFICIENCY
    peak_flops = roof.flops_per_s / roof.compute_efficiency
    return {
        "model": record["model"],
        "format": record["format"],
        "moe_kernel": moe_kernel(record),
        "phase": record["phase"],
        "tokens": record["tokens"],
        "weight_bytes": weight_bytes,
        "gemm_kernels": roof.gemm_kernels,
        "measured_ms": measured * 1e3,
        "predicted_ms": max(memory_s, compute_s) * 1e3,
        "bound": "memory" if memory_s >= compute_s else "compute",
        "measured_over_predicted": measured / max(memory_s, compute_s),
        "implied_bandwidth_efficiency": weight_bytes / measured / peak_bytes,
        "implied_compute_efficiency": flops / measured / peak_flops,
        "peak_bytes_per_s": peak_bytes,
    }


def unique_stacks(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The first measurement of each case; a later run's repeat is kept only as a note of how
    far it moved (run-to-run spread)."""
    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    repeats = []
    for row in rows:
        key = (row["model"], row["format"], row["moe_kernel"], row["phase"], row["tokens"])
        if key in first:
            moved = row["measured_ms"] / first[key]["measured_ms"] - 1
            repeats.append(f"{' '.join(map(str, key[:2] + key[3:]))}: {moved:+.1%}")
        else:
            first[key] = row
    return list(first.values()), repeats


def fit(stack: list[dict[str, Any]]) -> dict[str, Any]:
    """What the dense stacks imply for the roofline's constants.

    Decode: batch-1 bf16 steps of the dense sizes fitted (least squares) to
    bytes / (efficiency x datasheet bandwidth) + kernels x floor; fp8's streaming efficiency
    then follows with that floor. Prefill: each format's mean implied compute efficiency over
    the dense sizes' chunks."""
    dense = [r for r in stack if r["moe_kernel"] is None]
    decode = [r for r in dense if r["phase"] == "decode" and r["tokens"] == 1]
    bf16 = [r for r in decode if r["format"] == "bf16"]
    result: dict[str, Any] = {"decode_fit_models": [r["model"] for r in bf16]}
    if len(bf16) >= 2:
        a = np.array([[r["weight_bytes"] / r["peak_bytes_per_s"], r["gemm_kernels"]] for r in bf16])
        t = np.array([r["measured_ms"] / 1e3 for r in bf16])
        (inv_eff, floor), *_ = np.linalg.lstsq(a, t, rcond=None)
        predicted = a @ np.array([inv_eff, floor])
        result.update(
            stream_efficiency_bf16=float(1 / inv_eff),
            gemm_kernel_floor_s=float(floor),
            decode_fit_worst_error=float(np.max(np.abs(predicted / t - 1))),
        )
        fp8 = [r for r in decode if r["format"] == "fp8"]
        if fp8:
            r = fp8[0]
            streaming = r["measured_ms"] / 1e3 - r["gemm_kernels"] * floor
            result["stream_efficiency_fp8"] = r["weight_bytes"] / streaming / r["peak_bytes_per_s"]
    grouped = [r for r in stack if r["moe_kernel"] == "grouped_mm"]
    if grouped:
        spread: dict[str, float] = {}
        for phase in ("decode", "prefill"):
            ratios = [r["measured_over_predicted"] for r in grouped if r["phase"] == phase]
            if ratios:  # a run stopped early may lack a phase
                spread.update({f"{phase}_min": min(ratios), f"{phase}_max": max(ratios)})
        result["moe_grouped_over_roofline"] = spread
    for fmt in ("bf16", "fp8"):
        prefill = [
            r["implied_compute_efficiency"]
            for r in dense
            if r["phase"] == "prefill" and r["format"] == fmt
        ]
        if prefill:
            result[f"compute_efficiency_{fmt}"] = {
                "mean": float(np.mean(prefill)),
                "min": min(prefill),
                "max": max(prefill),
            }
    return result


def prefill_row(record: dict[str, Any], gpu: str) -> dict[str, Any]:
    roof = Roofline.for_names(record["model"], gpu, "bf16")
    cost = roof.step([ScheduledChunk(record["tokens"], 0)], 1)
    return {
        "model": record["model"],
        "tokens": record["tokens"],
        "measured_ms": record["median_s"] * 1e3,
        "predicted_ms": cost.seconds * 1e3,
        "measured_over_predicted": record["median_s"] / cost.seconds,
        "attn_implementation": record.get("attn_implementation"),
    }


def build(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from one or more runs on the same GPU (the first run's environment)."""
    measured = runs[0]
    env = measured["env"]
    if any(run["env"].get("gpu") != env.get("gpu") for run in runs):
        raise SystemExit("the runs were measured on different GPUs: report them apart")
    if env.get("smoke"):
        raise SystemExit("a --smoke run measures nothing: run measure.py on a GPU")
    gpu = catalog_gpu(env["gpu"], env["memory_gib"])
    spec = load_catalog().gpu(gpu)
    copy = measured.get("copy")
    stack, repeats = unique_stacks([stack_row(r, gpu) for run in runs for r in run["stack"]])
    return {
        "env": env,
        "catalog_gpu": gpu,
        "datasheet": {"bandwidth_gbs": spec.bandwidth_gbs, "bf16_tflops": spec.bf16_tflops},
        "simulator": {
            "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
            "compute_efficiency": COMPUTE_EFFICIENCY,
            "fp8_compute_efficiency": FP8_COMPUTE_EFFICIENCY,
            "gemm_kernel_floor_s": GEMM_KERNEL_FLOOR_S,
        },
        "copy_efficiency": (
            copy["bytes_per_s"] / (spec.bandwidth_gbs * 1e9) if copy is not None else None
        ),
        "stack": stack,
        "fit": fit(stack),
        "repeats": repeats,
        "hf_prefill": [prefill_row(r, gpu) for run in runs for r in run["hf_prefill"]],
        "errors": [e for run in runs for e in run["errors"]],
        "kernel_floor": [run["kernel_floor"] for run in runs if run.get("kernel_floor")],
    }


def fit_lines(fitted: dict[str, Any], sim: dict[str, Any]) -> list[str]:
    lines = []
    if "stream_efficiency_bf16" in fitted:
        lines.append(
            f"- **Decode** ({', '.join(fitted['decode_fit_models'])}, batch 1, bf16): the "
            f"matmuls fit bytes / ({fitted['stream_efficiency_bf16']:.3f} x datasheet "
            f"bandwidth) + {fitted['gemm_kernel_floor_s'] * 1e6:.2f} us per matmul kernel "
            f"(worst error {fitted['decode_fit_worst_error']:.1%}). The simulator uses "
            f"{sim['gemm_kernel_floor_s'] * 1e6:.1f} us and a bandwidth efficiency of "
            f"{sim['bandwidth_efficiency']:.3f}, fitted to the published whole-step decode "
            "anchor (docs/simulator.md), which includes attention and norms."
        )
    if "stream_efficiency_fp8" in fitted:
        lines.append(
            f"- **FP8 decode** streams at {fitted['stream_efficiency_fp8']:.3f} of the datasheet "
            "bandwidth with that floor (W8A8 with activation quantisation per matmul)."
        )
    moe = fitted.get("moe_grouped_over_roofline")
    if moe:
        lines.append(
            f"- **MoE** (grouped_mm): measured / roofline {moe['decode_min']:.2f}-"
            f"{moe['decode_max']:.2f} at decode, {moe['prefill_min']:.2f}-{moe['prefill_max']:.2f}"
            " at prefill. Not applied: vLLM runs its own fused-MoE kernel, tuned per GPU, which "
            "this does not measure."
        )
    for fmt, constant in (("bf16", "compute_efficiency"), ("fp8", "fp8_compute_efficiency")):
        eff = fitted.get(f"compute_efficiency_{fmt}")
        if eff:
            lines.append(
                f"- **Prefill compute, {fmt}**: mean {eff['mean']:.3f} of the datasheet peak "
                f"(range {eff['min']:.3f}-{eff['max']:.3f}); the simulator uses "
                f"{sim[constant]:.3f}."
            )
    return lines


def markdown(report: dict[str, Any], source: str) -> str:
    env, sim = report["env"], report["simulator"]
    lines = [
        "# GPU calibration: the simulator's roofline against one GPU",
        "",
        f"Measured by `measure.py` on {env['gpu']} ({env.get('nvidia_smi', {}).get('answer')}), "
        f"torch {env['torch']}, transformers {env.get('transformers')}, {env['started']}; "
        f"written by `report.py {source}`. Catalog GPU: {report['catalog_gpu']} "
        f"({report['datasheet']['bandwidth_gbs']} GB/s, "
        f"{report['datasheet']['bf16_tflops']} bf16 TFLOP/s dense).",
        "",
        f"Simulator constants: bandwidth efficiency {sim['bandwidth_efficiency']:.3f}, "
        f"compute efficiency {sim['compute_efficiency']:.3f} (bf16) and "
        f"{sim['fp8_compute_efficiency']:.3f} (fp8), "
        f"{sim['gemm_kernel_floor_s'] * 1e6:.1f} us per matmul kernel.",
    ]
    if report["copy_efficiency"] is not None:
        lines.append(
            f"A device-to-device copy reached {report['copy_efficiency']:.3f} of the datasheet "
            "bandwidth (bytes read + written)."
        )
    for floor in report["kernel_floor"]:
        lines.append(
            f"A graph of {floor['kernels']} tiny dependent matmuls took "
            f"{floor['per_kernel_s'] * 1e6:.2f} us per kernel."
        )
    if report["repeats"]:
        lines.append(
            "Cases measured again in a later run (the first run's figure is used): "
            + "; ".join(report["repeats"])
            + "."
        )
    lines += ["", "## What the measurements imply", "", *fit_lines(report["fit"], sim)]
    lines += [
        "",
        "## Matmul stacks (every decoder matmul of one step, one CUDA graph)",
        "",
        "Roofline: max(weight bytes / (datasheet bandwidth x bandwidth efficiency) + matmul "
        "kernels x floor, FLOPs / (peak x compute efficiency)) with the simulator's constants. "
        "MoE rows say how the routed experts ran: `grouped_mm` is one grouped GEMM per "
        "projection (as vLLM's fused-MoE kernel), `loop` two matmuls per expert hit.",
        "",
        "| model | format | experts | phase | tokens | measured ms | roofline ms | bound | "
        "measured / roofline | implied bandwidth eff. | implied compute eff. |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in report["stack"]:
        lines.append(
            f"| {r['model']} | {r['format']} | {r['moe_kernel'] or '-'} | {r['phase']} "
            f"| {r['tokens']} "
            f"| {r['measured_ms']:.3f} | {r['predicted_ms']:.3f} | {r['bound']} "
            f"| {r['measured_over_predicted']:.2f} | {r['implied_bandwidth_efficiency']:.3f} "
            f"| {r['implied_compute_efficiency']:.3f} |"
        )
    lines += [
        "",
        "## Whole-model prefill (transformers, no cache) against the roofline's full step",
        "",
        "| model | tokens | measured ms | roofline ms | measured / roofline | attention |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["hf_prefill"]:
        lines.append(
            f"| {r['model']} | {r['tokens']} | {r['measured_ms']:.1f} | {r['predicted_ms']:.1f} "
            f"| {r['measured_over_predicted']:.2f} | {r['attn_implementation']} |"
        )
    if report["errors"]:
        lines += ["", "## Errors", ""]
        for e in report["errors"]:
            lines.append(f"- {e['where']}: `{e['error'].strip().splitlines()[-1]}`")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("measured", type=Path, nargs="+", help="measure.py outputs, one GPU")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    report = build([json.loads(path.read_text()) for path in args.measured])
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    sources = " ".join(path.name for path in args.measured)
    (args.out_dir / "results.md").write_text(markdown(report, sources))
    print(f"wrote {args.out_dir / 'results.md'}")


if __name__ == "__main__":
    main()
