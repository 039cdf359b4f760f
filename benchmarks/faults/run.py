"""Run the fault suite (tests/faults) against its local fleet and write its figures here:
results.json (as the suite records them) and results.md (the tables).

    ./dev run python benchmarks/faults/run.py            # runs the suite, then renders
    ./dev run python benchmarks/faults/run.py --render   # renders results.json only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results.json"
REPORT = HERE / "results.md"
VLLM_COST = HERE / "vllm_pool_cost.json"
COMMAND = "./dev run python benchmarks/faults/run.py"


def run_suite() -> int:
    env = {**os.environ, "GEMMA_FLEET_FAULT_RESULTS": str(RESULTS)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/faults", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        check=False,
    )
    if not RESULTS.exists():
        raise SystemExit(f"the suite wrote no figures (exit code {done.returncode})")
    data = json.loads(RESULTS.read_text())
    data["meta"]["suite_wall_s"] = round(time.monotonic() - started, 1)
    data["meta"]["pytest_exit_code"] = done.returncode
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    return done.returncode


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _phase(p: dict[str, Any]) -> str:
    return f"{p['ok']}/{p['requests']} ok, p50 {_s(p['p50_s'])} s, p95 {_s(p['p95_s'])} s"


def render(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# Faults under load: figures",
        "",
        f"Reproduce: `{COMMAND}` (runs `tests/faults`, then writes this file). Fleet: "
        "`tests/faults/fleet-faults.yaml` (simulated engines at speedup 20, gemma-4-e2b x2, "
        "gemma-4-e4b x1, alias gemma-4) on a local Ray cluster, real redis-server, clients "
        "over HTTP. Machine: 2 shared cores.",
        "",
        f"Fleet start {meta.get('fleet_start_s', '-')} s; whole suite "
        f"{meta.get('suite_wall_s', '-')} s; pytest exit code "
        f"{meta.get('pytest_exit_code', '-')}.",
        "",
        "| fault | in flight at fault | requests | failed (client view) | retried | cut streams "
        "| recovery s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in data["faults"]:
        failed = "; ".join(f"{k} x{v}" for k, v in f["failed"].items()) or "none"
        lines.append(
            f"| {f['fault']} | {f['in_flight_at_fault']} | {f['requests']} | {failed} | "
            f"{f['retried']} | {f['cut_streams']} | {_s(f['recovery_s'])} |"
        )
    lines += [
        "",
        "Latency of successful requests by when they were sent (end to end, client side):",
        "",
        "| fault | before | during | after |",
        "| --- | --- | --- | --- |",
    ]
    for f in data["faults"]:
        lines.append(
            f"| {f['fault']} | {_phase(f['before'])} | {_phase(f['during'])} | "
            f"{_phase(f['after'])} |"
        )
    notes = [(f["fault"], n) for f in data["faults"] for n in f["notes"]]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {fault}: {note}" for fault, note in notes]
    samples = [(f["fault"], x) for f in data["faults"] for x in f.get("failed_samples", [])]
    if samples:
        lines += ["", "Failed requests, first and last few (sent relative to the fault):", ""]
        lines += [f"- {fault}: `{sample}`" for fault, sample in samples]
    if VLLM_COST.exists():
        cost = json.loads(VLLM_COST.read_text())
        lines += [
            "",
            "## A tiny real-vLLM pool: not in the suite",
            "",
            "Measured alone (`./dev run python benchmarks/faults/vllm_pool_cost.py`, same ports): "
            f"a fleet of one vLLM pool (CPU build, tiny checkpoint) serves after "
            f"{cost['fleet_ready_s']} s; its replica's processes hold "
            f"{cost['replica_rss_gib']} GiB; "
            f"a 16-token request takes {cost['first_request_s']} s. A replica killed in the suite "
            "would cost about that start again to recover, on top of the fleet's own start: the "
            "suite would pass its 6-minute budget, so the vLLM pool stays out of it.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--render", action="store_true", help="only render results.json")
    args = parser.parse_args()
    code = 0 if args.render else run_suite()
    REPORT.write_text(render(json.loads(RESULTS.read_text())))
    print(REPORT)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
