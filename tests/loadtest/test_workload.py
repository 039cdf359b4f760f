"""Workload files: the shipped examples load, and mistakes are refused with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_fleet.loadtest.apis import APIS
from gemma_fleet.loadtest.workload import KINDS, WorkloadFileError, load_workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "loadtest" / "workloads").glob("*.yaml"))
CI_WORKLOAD = Path(__file__).with_name("workload-ci.yaml")


@pytest.mark.parametrize("path", [*EXAMPLES, CI_WORKLOAD], ids=lambda p: p.name)
def test_shipped_workload_files_load(path: Path) -> None:
    workload = load_workload(path)
    assert workload.active


def test_the_mix_and_the_ci_workload_cover_every_kind_and_a_limited_team() -> None:
    for path in (ROOT / "loadtest" / "workloads" / "mix.yaml", CI_WORKLOAD):
        workload = load_workload(path)
        assert {w.kind for w in workload.active} == set(KINDS)
        limited = [t.name for t in workload.teams if t.rate_limited]
        assert limited and any(w.team in limited for w in workload.active)


def test_the_mix_and_the_ci_workload_call_every_api() -> None:
    for path in (ROOT / "loadtest" / "workloads" / "mix.yaml", CI_WORKLOAD):
        assert {w.api for w in load_workload(path).active} == set(APIS)


def test_workload_slo_overrides_only_the_fields_it_names() -> None:
    workload = load_workload(ROOT / "loadtest" / "workloads" / "mix.yaml")
    docs = workload.slo_of("long-context")
    assert docs.ttft_s == 15 and docs.e2e_s == 60
    assert docs.tpot_s == workload.slo.tpot_s


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "w.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: chat, team: a}]", "workloads.0"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: b}]", "team 'b'"),
        (
            "teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: a, wieght: 2}]",
            "wieght",
        ),
        (
            "teams: [{name: a}]\nworkloads: [{name: x, kind: long_context, team: a,"
            " context_tokens: [9000, 10]}]",
            "context_tokens",
        ),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: a, weight: 0}]",
         "every weight is 0"),
        ("teams: [{name: Bad_Team}]\nworkloads: []", "teams.0.name: 'Bad_Team' is not a team "
         "name: 1 to 63 lowercase letters, digits and '-'"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: a, weight: -1,"
         " max_tokens: 0}]", "workloads.0.weight: Input should be greater than or equal to 0"
         " (and 1 more problem)"),
        ("teams: [{name: a, limits: {requests_per_min: 5}}]\nworkloads: []", "requests_per_min"),
        ("teams: [a", "not valid YAML"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: a, api: grpc}]",
         "workloads.0.api"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: audio, team: a, api: messages}]",
         "api: messages cannot send audio"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: tool_calling, team: a,"
         " api: responses}]", "the tool loop speaks chat completions"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: documents, team: a,"
         " pages: [1, 101]}]", "pages must be [low, high] within 1-100"),
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: documents, team: a,"
         " words_per_page: [100, 5000]}]", "words_per_page must be [low, high] within 1-564"),
        # a user that thinks for ever never sends; YAML's .inf is refused wherever it is
        ("teams: [{name: a}]\nworkloads: [{name: x, kind: short_chat, team: a,"
         " think_time_s: [1, .inf]}]", "workloads.0.think_time_s.1: not a finite number"),
        # one Locust class for both: one workload would silently never run
        ("teams: [{name: a}]\nworkloads: [{name: chat-1, kind: short_chat, team: a},"
         " {name: chat_1, kind: short_chat, team: a}]", "'chat-1' and 'chat_1' differ only in"),
    ],
)  # fmt: skip
def test_bad_workload_files_are_refused_naming_the_problem(
    tmp_path: Path, text: str, names: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(WorkloadFileError, match=str(path)) as err:
        load_workload(path)
    assert names in str(err.value)


def test_a_missing_workload_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WorkloadFileError, match="cannot read"):
        load_workload(tmp_path / "absent.yaml")


def test_the_page_limit_is_the_gateways() -> None:
    """A documents workload may ask for as many pages as the gateway reads, and no more."""
    from gemma_fleet.gateway import pdf_render
    from gemma_fleet.loadtest import pdf

    assert pdf.MAX_PDF_PAGES == pdf_render.MAX_PDF_PAGES
