"""`gemma-fleet profile` as a user runs it: a real subprocess of the installed command."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXE = shutil.which("gemma-fleet", path=str(Path(sys.executable).parent))
REQUIRED_KEYS = {
    "model", "gpu", "quant", "tp", "max_model_len", "fits", "weight_bytes", "kv_bytes_per_token",
    "kv_bytes_per_sequence", "kv_capacity_tokens", "max_concurrent_sequences", "reason",
}  # fmt: skip


# Output piped, as into a file or a log, with no COLUMNS: what a user's shell gives a command.
# An explicit environment, because the one children inherit by default is not os.environ here:
# pytest imports readline, which exports COLUMNS=80 at C level, and the command honours it.
PIPED_ENV = {k: v for k, v in os.environ.items() if k != "COLUMNS"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    assert EXE is not None, "gemma-fleet is not installed next to this interpreter"
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120, env=PIPED_ENV)


def test_json_single_profile() -> None:
    out = run("profile", "--model", "gemma-4-31B", "--gpu", "H100-80GB", "--quant", "fp8",
              "--tp", "1", "--max-model-len", "32768", "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 1
    row = rows[0]
    assert row.keys() >= REQUIRED_KEYS
    assert row["fits"] is True
    assert row["kv_bytes_per_token"] == 81_920
    assert row["max_concurrent_sequences"] >= 1


def test_json_enumerates_valid_tp_when_not_given() -> None:
    out = run("profile", "--model", "gemma-4-31B", "--gpu", "L4", "--quant", "bf16", "--json")
    rows = json.loads(out.stdout)
    assert [r["tp"] for r in rows] == [1, 2, 4]
    assert [r["fits"] for r in rows] == [False, False, True]


def test_matrix_without_filters() -> None:
    out = run("profile")
    assert out.returncode == 0, out.stderr
    for model in ("gemma-4-E2B", "gemma-4-E4B", "gemma-4-26B-A4B", "gemma-4-31B"):
        assert model in out.stdout
    for gpu in ("L4", "H100-80GB", "B200"):
        assert gpu in out.stdout
    assert "TP2" in out.stdout and "TP4" in out.stdout


def test_breakdown_shows_each_term() -> None:
    out = run("profile", "-m", "gemma-4-E2B", "-g", "L4", "-q", "bf16", "--tp", "1")
    assert out.returncode == 0, out.stderr
    for term in ("ple_table", "audio_encoder", "activations", "left for KV", "KV-shared"):
        assert term in out.stdout


def test_claims() -> None:
    out = run("profile", "--claims", "--json")
    rows = json.loads(out.stdout)
    assert len(rows) == 4
    assert all(not r["holds"] for r in rows)
    rtx = next(r for r in rows if r["quant"] == "bf16")
    assert rtx["weight_gb"] > 61
    table = run("profile", "--claims")
    assert table.stdout.count("does not hold") == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "gemma-5"], "unknown model 'gemma-5'"),
        (["--gpu", "TPU"], "unknown GPU 'TPU'"),
        (["--quant", "q2"], "unknown quantization 'q2'"),
        (["--model", "gemma-4-31B", "--tp", "3"], "tp must divide"),
        (["--max-model-len", "-5"], "positive"),
        (["--max-model-len", "lots"], "Invalid value for '--max-model-len'"),
        (["--kv-dtype", "int4"], "--kv-dtype"),
        (["--model", "gemma-4-E2B", "--max-model-len", "200000"], "context length"),
        (["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization"),
        (["--bogus"], "--bogus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = run("profile", *args)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
