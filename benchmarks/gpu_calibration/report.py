"""Compare a GPU measurement (measure.py's JSON) with the simulator's roofline: results.md.

For each matmul stack the roofline predicts a memory time (the weight bytes one step reads,
over datasheet bandwidth x BANDWIDTH_EFFICIENCY) and a compute time (2 x parameters x tokens,
over datasheet FLOP/s x COMPUTE_EFFICIENCY); the stack measures their max. The report gives
the measured time against the prediction, and the efficiency the measurement implies
(bytes / time / datasheet bandwidth for decode, FLOPs / time / datasheet peak for prefill),
next to the constant the simulator uses. Whole-model prefills are compared with the
roofline's full step (attention and the per-step overhead included).

Reproduce: .venv/bin/python benchmarks/gpu_calibration/report.py MEASURED.json
(writes results.md and results.json beside this file unless --out-dir says otherwise)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator.roofline import (
    BANDWIDTH_EFFICIENCY,
    COMPUTE_EFFICIENCY,
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


def stack_row(record: dict[str, Any], gpu: str) -> dict[str, Any]:
    roof = Roofline.for_names(record["model"], gpu, record["format"])
    rows = record["rows"]
    lm_rows = rows if record["phase"] == "decode" else 1
    weight_bytes = roof.weight_bytes(rows)
    flops = 2.0 * roof.active_linear_params * rows + 2.0 * roof.lm_head_params * lm_rows
    memory_s = weight_bytes / roof.bytes_per_s
    compute_s = flops / roof.flops_per_s
    measured = record["median_s"]
    peak_bytes = roof.bytes_per_s / BANDWIDTH_EFFICIENCY
    peak_flops = roof.flops_per_s / COMPUTE_EFFICIENCY
    return {
        "model": record["model"],
        "format": record["format"],
        "phase": record["phase"],
        "tokens": record["tokens"],
        "measured_ms": measured * 1e3,
        "predicted_ms": max(memory_s, compute_s) * 1e3,
        "bound": "memory" if memory_s >= compute_s else "compute",
        "measured_over_predicted": measured / max(memory_s, compute_s),
        "implied_bandwidth_efficiency": weight_bytes / measured / peak_bytes,
        "implied_compute_efficiency": flops / measured / peak_flops,
    }


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


def build(measured: dict[str, Any]) -> dict[str, Any]:
    env = measured["env"]
    if env.get("smoke"):
        raise SystemExit("a --smoke run measures nothing: run measure.py on a GPU")
    gpu = catalog_gpu(env["gpu"], env["memory_gib"])
    spec = load_catalog().gpu(gpu)
    copy = measured.get("copy")
    return {
        "env": env,
        "catalog_gpu": gpu,
        "datasheet": {"bandwidth_gbs": spec.bandwidth_gbs, "bf16_tflops": spec.bf16_tflops},
        "simulator": {
            "bandwidth_efficiency": BANDWIDTH_EFFICIENCY,
            "compute_efficiency": COMPUTE_EFFICIENCY,
        },
        "copy_efficiency": (
            copy["bytes_per_s"] / (spec.bandwidth_gbs * 1e9) if copy is not None else None
        ),
        "stack": [stack_row(r, gpu) for r in measured["stack"]],
        "hf_prefill": [prefill_row(r, gpu) for r in measured["hf_prefill"]],
        "errors": measured["errors"],
    }


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
        f"compute efficiency {sim['compute_efficiency']:.3f}.",
    ]
    if report["copy_efficiency"] is not None:
        lines.append(
            f"A device-to-device copy reached {report['copy_efficiency']:.3f} of the datasheet "
            "bandwidth (bytes read + written)."
        )
    lines += [
        "",
        "## Matmul stacks (every decoder matmul of one step, one CUDA graph)",
        "",
        "| model | format | phase | tokens | measured ms | roofline ms | bound | measured / "
        "roofline | implied bandwidth eff. | implied compute eff. |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in report["stack"]:
        lines.append(
            f"| {r['model']} | {r['format']} | {r['phase']} | {r['tokens']} "
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
    parser.add_argument("measured", type=Path)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()
    report = build(json.loads(args.measured.read_text()))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out_dir / "results.md").write_text(markdown(report, args.measured.name))
    print(f"wrote {args.out_dir / 'results.md'}")


if __name__ == "__main__":
    main()
