"""The chart's VRAM fit table is the VRAM model's answer, and stays in sync with it."""

from __future__ import annotations

import functools
import json

import pytest
from chart_support import CHART

from gemma_fleet.deployments.chart.vram_table import (
    CHART_TABLE_PATH,
    build_table,
    main,
    render_table,
)
from gemma_fleet.vram import profile


def test_chart_copy_is_current() -> None:
    """Fails after a catalog or VRAM-model change until the table is regenerated with
    `python -m gemma_fleet.deployments.chart.vram_table`."""
    assert CHART_TABLE_PATH == CHART / "files" / "vram-fit.json"
    assert CHART_TABLE_PATH.read_text() == render_table(build_table()), (
        "helm/gemma-fleet/files/vram-fit.json is stale: run "
        "`python -m gemma_fleet.deployments.chart.vram_table`"
    )


def test_check_mode_reports_a_stale_file(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "vram-fit.json"
    stale.write_text("{}\n")
    assert main(["--out", str(stale), "--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["--out", str(stale)]) == 0
    assert main(["--out", str(stale), "--check"]) == 0
    assert json.loads(stale.read_text())["fit"]


@pytest.mark.parametrize(
    ("model", "gpu", "quant", "tp", "kv", "text_only"),
    [
        ("gemma-4-31B", "A100-40GB", "bf16", 2, "bf16", False),
        ("gemma-4-31B", "H100-80GB", "bf16", 1, "bf16", False),
        ("gemma-4-31B", "L4", "q4_k_m", 2, "fp8", True),
        ("gemma-4-26B-A4B", "L40S", "fp8", 1, "bf16", False),
        ("gemma-4-E4B", "L4", "bf16", 1, "bf16", False),
    ],
)
def test_limit_is_the_longest_context_the_profile_accepts(
    model: str, gpu: str, quant: str, tp: int, kv: str, text_only: bool
) -> None:
    """At the table's limit the VRAM profile fits; one token more does not (or the limit is
    the model's whole context)."""
    table = json.loads(CHART_TABLE_PATH.read_text())
    key = f"{kv}/{'text' if text_only else 'multimodal'}"
    limit = table["fit"][model][quant][gpu][key][str(tp)]
    context = table["models"][model]["context_length"]
    profile_at = functools.partial(
        profile, model, gpu, quant, tp=tp, kv_dtype=kv, text_only=text_only
    )
    if limit == 0:
        assert not profile_at(max_model_len=1).fits
        return
    assert profile_at(max_model_len=limit).fits
    if limit < context:
        assert not profile_at(max_model_len=limit + 1).fits


def test_table_lists_only_valid_tp_degrees() -> None:
    table = json.loads(CHART_TABLE_PATH.read_text())
    assert table["models"]["gemma-4-E2B"]["valid_tp"] == [1]
    assert table["models"]["gemma-4-31B"]["valid_tp"] == [1, 2, 4]
    row = table["fit"]["gemma-4-31B"]["bf16"]["H100-80GB"]["bf16/multimodal"]
    assert sorted(row) == ["1", "2", "4"]
