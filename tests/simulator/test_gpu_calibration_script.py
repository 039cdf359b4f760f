"""The GPU calibration benchmark (benchmarks/gpu_calibration/) stays runnable between the rare
sessions that have a GPU: its committed spec.json matches the catalog, measure.py runs end to
end on tiny shapes on the CPU (--smoke), and report.py refuses to report a smoke run as a
measurement. What it measures on a GPU is not checked here (no GPU); the constants the
simulator took from the committed H200 run are."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gemma_fleet.deployments.engines.simulator.roofline import (
    BANDWIDTH_EFFICIENCY,
    COMPUTE_EFFICIENCY,
    FP8_COMPUTE_EFFICIENCY,
    GEMM_KERNEL_FLOOR_S,
    Roofline,
)

FOLDER = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_calibration"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpu_calibration_{name}", FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_spec_matches_the_catalog() -> None:
    committed = json.loads((FOLDER / "spec.json").read_text())
    assert committed == _load("workload").build_spec(), (
        "spec.json is stale: run .venv/bin/python benchmarks/gpu_calibration/workload.py"
    )


def test_smoke_run_measures_every_size_and_report_refuses_it(tmp_path: Path) -> None:
    out = tmp_path / "measured.json"
    measure = [sys.executable, str(FOLDER / "measure.py"), str(FOLDER / "spec.json"), str(out)]
    done = subprocess.run(
        [*measure, "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(out.read_text())
    assert measured["errors"] == []
    spec = json.loads((FOLDER / "spec.json").read_text())
    sizes = {m["model"] for m in spec["models"]}
    # Every size: two decode batches and one prefill chunk in bf16 (fp8 needs a GPU), and a
    # whole-model prefill through transformers.
    assert {r["model"] for r in measured["stack"]} == sizes
    assert len(measured["stack"]) == 3 * len(sizes)
    assert all(r["median_s"] > 0 for r in measured["stack"])
    assert {r["model"] for r in measured["hf_prefill"]} == sizes

    report = subprocess.run(
        [sys.executable, str(FOLDER / "report.py"), str(out), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode != 0
    assert "--smoke run measures nothing" in report.stderr
    assert not (tmp_path / "results.md").exists()


def test_the_roofline_counts_the_matmul_kernels_the_gpu_ran() -> None:
    """The per-kernel floor was fitted with measure.py's kernel counts: the roofline must
    charge it for the same matmuls (vLLM's fusions, one grouped kernel per expert projection)."""
    spec = json.loads((FOLDER / "spec.json").read_text())
    for entry in spec["models"]:
        ran = sum(len(layer) for layer in entry["layers"]) + len(entry["model_linears"]) + 1
        if entry["moe"]:
            ran += 2 * len(entry["layers"])  # grouped gate_up and down per layer
        assert Roofline.for_names(entry["model"], "H200", "bf16").gemm_kernels == ran


def test_fit_recovers_the_constants_a_synthetic_gpu_was_built_with() -> None:
    """Steps made from bytes / (0.9 x bandwidth) + 3 us per kernel and prefills at 0.6 of
    peak: the report's fit must give those back."""
    report = _load("report")
    rows = []
    for model in ("gemma-4-E2B", "gemma-4-E4B", "gemma-4-31B"):
        roof = Roofline.for_names(model, "H200", "bf16")
        peak_bytes = roof.bytes_per_s / BANDWIDTH_EFFICIENCY
        seconds = roof.weight_bytes(1) / (0.9 * peak_bytes) + roof.gemm_kernels * 3e-6
        decode = {"model": model, "format": "bf16", "phase": "decode", "tokens": 1, "rows": 1}
        rows.append(report.stack_row({**decode, "median_s": seconds}, "H200"))
        prefill = dict(decode, phase="prefill", tokens=8192, rows=8192)
        flops = roof.matmul_flops(8192, 1)
        peak_flops = roof.flops_per_s / roof.compute_efficiency
        rows.append(report.stack_row({**prefill, "median_s": flops / (0.6 * peak_flops)}, "H200"))
    fitted = report.fit(rows)
    assert fitted["stream_efficiency_bf16"] == pytest.approx(0.9, rel=1e-6)
    assert fitted["gemm_kernel_floor_s"] == pytest.approx(3e-6, rel=1e-6)
    assert fitted["compute_efficiency_bf16"]["mean"] == pytest.approx(0.6, rel=1e-6)


def test_the_simulators_constants_are_what_the_committed_gpu_run_measured() -> None:
    """results.json is the H200 run the constants were set from: a constant changed without
    a new measurement, or a new measurement without updating them, fails here."""
    results = json.loads((FOLDER / "results.json").read_text())
    fitted = results["fit"]
    assert fitted["decode_fit_worst_error"] < 0.02
    assert abs(GEMM_KERNEL_FLOOR_S / fitted["gemm_kernel_floor_s"] - 1) < 0.02
    assert abs(COMPUTE_EFFICIENCY - fitted["compute_efficiency_bf16"]["mean"]) < 0.005
    assert abs(FP8_COMPUTE_EFFICIENCY - fitted["compute_efficiency_fp8"]["mean"]) < 0.005
    # The bandwidth efficiency is the anchor's (whole vLLM steps), below what matmuls alone
    # stream at on the GPU; the anchor itself is tests/simulator/test_roofline.py's.
    assert BANDWIDTH_EFFICIENCY < fitted["stream_efficiency_fp8"] < fitted["stream_efficiency_bf16"]
