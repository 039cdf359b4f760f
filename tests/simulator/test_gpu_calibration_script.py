"""The GPU calibration benchmark (benchmarks/gpu_calibration/) stays runnable between the rare
sessions that have a GPU: its committed spec.json matches the catalog, measure.py runs end to
end on tiny shapes on the CPU (--smoke), and report.py refuses to report a smoke run as a
measurement. What it measures on a GPU is not checked here (no GPU)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

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
    pytest.importorskip("transformers")
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
