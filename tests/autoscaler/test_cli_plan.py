"""`gemma-fleet plan` as a user runs it: a real subprocess of the installed command.

Most cases give measured profiles, so capacities need no simulation and the tests stay quick;
one case plans from the simulator on a deliberately small pool.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gemma_fleet.deployments.pools.schema import FleetSpec

EXE = shutil.which("gemma-fleet", path=str(Path(sys.executable).parent))

FLEET = {
    "node_pools": [
        {"name": "l4", "gpu": "L4", "gpus_per_node": 2, "max_nodes": 3, "cost_per_gpu_hour": 0.85},
        {
            "name": "h100",
            "gpu": "H100-80GB",
            "gpus_per_node": 4,
            "max_nodes": 1,
            "cost_per_gpu_hour": 3.9,
        },
    ],
    "model_pools": [
        {
            "name": "e4b-l4",
            "model": "gemma-4-E4B",
            "max_model_len": 8192,
            "node_pool": "l4",
            "replicas": {"min": 0, "max": 6},
        },
        {
            "name": "e4b-h100",
            "model": "gemma-4-E4B",
            "max_model_len": 8192,
            "node_pool": "h100",
            "replicas": {"min": 0, "max": 4},
        },
    ],
}
PROFILES = {
    "profiles": [
        {
            "model": "gemma-4-E4B",
            "gpu": gpu,
            "slo": {"ttft_p95_s": 2.0, "tpot_p95_s": 0.1},
            "prompt_tokens": [256, 2048],
            "output_tokens": [64, 512],
            "requests_per_s": [[4 * rate, 2 * rate], [2 * rate, rate]],
        }
        for gpu, rate in (("L4", 1.0), ("H100-80GB", 6.0))
    ]
}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert EXE is not None, "gemma-fleet is not installed next to this interpreter"
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(cwd / "cache"), "COLUMNS": "160"}
    return subprocess.run(
        [EXE, "plan", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def write(tmp: Path, name: str, data: object) -> str:
    (tmp / name).write_text(yaml.safe_dump(data))
    return str(tmp / name)


def demand(rate: float, model: str = "gemma-4-E4B") -> dict[str, object]:
    load = {"requests_per_s": rate, "mean_prompt_tokens": 256, "mean_output_tokens": 64}
    return {"headroom": 1.0, "models": {model: load}}


def test_plan_prints_table_and_writes_helm_values(tmp_path: Path) -> None:
    args = [
        "-f",
        write(tmp_path, "fleet.yaml", FLEET),
        "--profiles",
        write(tmp_path, "p.yaml", PROFILES),
    ]
    out = run(
        "-d",
        write(tmp_path, "d.yaml", demand(10.0)),
        *args,
        "--values-out",
        "values.yaml",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # 10 req/s: three L4 replicas (4 req/s each, 2 nodes, 3.40/h) beat one H100 (15.60/h).
    assert "meets demand" in out.stdout and "e4b-l4" in out.stdout
    values = yaml.safe_load((tmp_path / "values.yaml").read_text())
    fleet = FleetSpec.model_validate(values["fleet"])
    assert fleet.model_pool("e4b-l4").replicas.initial == 3
    assert fleet.model_pool("e4b-h100").replicas.initial == 0
    # Node pools as they were: the planned 2 L4 nodes as min_nodes would be a floor paid for
    # at every quiet hour (the Ray autoscaler starts the nodes the replicas need).
    assert fleet.node_pools == FleetSpec.model_validate(FLEET).node_pools
    assert fleet.node_pool("l4").min_nodes == 0 and fleet.node_pool("l4").max_nodes == 3


def test_json_output_and_infeasible_exit_1(tmp_path: Path) -> None:
    args = [
        "-f",
        write(tmp_path, "fleet.yaml", FLEET),
        "--profiles",
        write(tmp_path, "p.yaml", PROFILES),
        "--json",
    ]
    # L4: 3 nodes x 2 GPUs x 4 req/s = 24; H100: 4 x 24 = 96. 200 req/s cannot be met.
    out = run("-d", write(tmp_path, "d.yaml", demand(200.0)), *args, cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    plan = json.loads(out.stdout)
    assert plan["feasible"] is False
    text = plan["shortfall"]["gemma-4-E4B"]
    assert "needs 200.0 req/s" in text and "at most 120.0" in text and "max_nodes" in text
    assert plan["replicas"] == {"e4b-l4": 6, "e4b-h100": 4}


def test_trace_png(tmp_path: Path) -> None:
    trace = {
        "headroom": 1.0,
        "models": {"gemma-4-E4B": {"mean_prompt_tokens": 256, "mean_output_tokens": 64}},
        "hours": [
            {"hour": h, "requests_per_s": {"gemma-4-E4B": r}} for h, r in enumerate([2, 10, 40, 5])
        ],
    }
    out = run(
        "-f",
        write(tmp_path, "fleet.yaml", FLEET),
        "--profiles",
        write(tmp_path, "p.yaml", PROFILES),
        "--trace",
        write(tmp_path, "t.yaml", trace),
        "--png",
        "chart.png",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    png = (tmp_path / "chart.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "Plan by hour" in out.stdout


def test_plan_from_simulator(tmp_path: Path) -> None:
    small = {
        "node_pools": [FLEET["node_pools"][0]],
        "model_pools": [
            {
                "name": "e2b",
                "model": "gemma-4-E2B",
                "max_model_len": 4096,
                "node_pool": "l4",
                "max_num_seqs": 8,
                "replicas": {"min": 0, "max": 4},
            },
        ],
    }
    load = {"requests_per_s": 1.0, "mean_prompt_tokens": 200, "mean_output_tokens": 50}
    out = run(
        "-f",
        write(tmp_path, "fleet.yaml", small),
        "-d",
        write(tmp_path, "d.yaml", {"models": {"gemma-4-E2B": load}}),
        "--sim-requests",
        "30",
        "--json",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["capacity_per_replica"]["e2b"] > 1.2  # one replica carries 1 req/s x 1.2
    assert plan["replicas"] == {"e2b": 1}
    assert (tmp_path / "cache" / "gemma-fleet" / "capacity.json").exists()


def one_line_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gemma-fleet: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


def test_missing_demand_file(tmp_path: Path) -> None:
    assert "cannot read" in one_line_error(run("-d", "nope.yaml", cwd=tmp_path))


def test_unknown_model(tmp_path: Path) -> None:
    out = run("-d", write(tmp_path, "d.yaml", demand(1.0, "gemma-5-XL")), cwd=tmp_path)
    assert "unknown model 'gemma-5-XL'" in one_line_error(out)


def test_negative_rate(tmp_path: Path) -> None:
    line = one_line_error(run("-d", write(tmp_path, "d.yaml", demand(-1.0)), cwd=tmp_path))
    assert "models.gemma-4-E4B.requests_per_s" in line and "greater than or equal to 0" in line


@pytest.mark.parametrize(
    ("rate", "says"),
    [
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (1e300, "less than or equal to 1000000"),
    ],
)
def test_a_rate_no_fleet_could_have_is_named(tmp_path: Path, rate: float, says: str) -> None:
    line = one_line_error(run("-d", write(tmp_path, "d.yaml", demand(rate)), cwd=tmp_path))
    assert "models.gemma-4-E4B.requests_per_s" in line and says in line


def test_an_infinite_gpu_cost_is_named_not_a_solver_traceback(tmp_path: Path) -> None:
    free = {**FLEET, "node_pools": [{**FLEET["node_pools"][0], "cost_per_gpu_hour": float("inf")}]}
    d = write(tmp_path, "d.yaml", demand(1.0))
    line = one_line_error(run("-d", d, "-f", write(tmp_path, "f.yaml", free), cwd=tmp_path))
    assert "node_pools.0.cost_per_gpu_hour: not a finite number" in line


def test_png_needs_trace_and_bad_fleet(tmp_path: Path) -> None:
    d = write(tmp_path, "d.yaml", demand(1.0))
    assert "--trace" in one_line_error(run("-d", d, "--png", "x.png", cwd=tmp_path))
    bad = {**FLEET, "node_pools": [{**FLEET["node_pools"][0], "gpus": 2}]}
    line = one_line_error(run("-d", d, "-f", write(tmp_path, "f.yaml", bad), cwd=tmp_path))
    assert "f.yaml" in line and "node_pools[l4].gpus: unknown key" in line


def test_values_with_simulator_pools_say_the_chart_refuses_them(tmp_path: Path) -> None:
    """The README plans the default fleet (simulator pools) into values and `helm install`s
    values: the chart stops on each pool (`engine: "simulator" runs only on a laptop`), and
    plan said nothing. A vLLM fleet plans without the note."""
    args = ["-d", write(tmp_path, "d.yaml", demand(10.0)), "--profiles"]
    args += [write(tmp_path, "p.yaml", PROFILES), "--values-out", "values.yaml"]
    out = run(*args, "-f", write(tmp_path, "fleet.yaml", FLEET), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "engine: simulator (e4b-l4, e4b-h100)" in out.stderr
    assert "engine: vllm" in out.stderr
    vllm = {**FLEET, "model_pools": [{**p, "engine": "vllm"} for p in FLEET["model_pools"]]}
    out = run(*args, "-f", write(tmp_path, "vllm.yaml", vllm), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "simulator" not in out.stderr


def test_plan_reads_the_fleet_of_helm_values(tmp_path: Path) -> None:
    """A platform engineer plans the values a cluster is installed with (the fleet sits under
    `fleet:` beside the chart's other keys); before, --fleet took only a bare fleet file and
    refused the values naming node_pools and model_pools as missing."""
    vllm = {**FLEET, "model_pools": [{**p, "engine": "vllm"} for p in FLEET["model_pools"]]}
    chart_values = {"image": {"repository": "ghcr.io/example/gemma-fleet"}, "fleet": vllm}
    args = ["-d", write(tmp_path, "d.yaml", demand(10.0)), "--profiles"]
    args += [write(tmp_path, "p.yaml", PROFILES), "--values-out", "planned.yaml"]
    out = run(*args, "-f", write(tmp_path, "values.yaml", chart_values), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "e4b-l4" in out.stdout and "simulator" not in out.stderr
    planned = FleetSpec.model_validate(
        yaml.safe_load((tmp_path / "planned.yaml").read_text())["fleet"]
    )
    assert planned.model_pool("e4b-l4").replicas.initial == 3
