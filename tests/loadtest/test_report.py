"""The report's arithmetic on known requests: SLO attainment, goodput, 429s by team, errors by
type, percentiles, and the files it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gemma_fleet.loadtest.records import STOPPED, RecordWriter, RequestRecord, read_records
from gemma_fleet.loadtest.report import build_report, meets
from gemma_fleet.loadtest.runner import write_report
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.workload import Slo, WorkloadFile

WORKLOAD = WorkloadFile.model_validate(
    {
        "slo": {"ttft_s": 1.0, "tpot_s": 0.05, "e2e_s": 10},
        "slo_target": 0.75,
        "teams": [{"name": "a"}, {"name": "lim", "limits": {"requests_per_minute": 1}}],
        "workloads": [
            {"name": "chat", "kind": "short_chat", "team": "a"},
            {"name": "docs", "kind": "long_context", "team": "a", "slo": {"ttft_s": 5}},
            {"name": "capped", "kind": "short_chat", "team": "lim"},
        ],
    }
)
T0 = 1_000_000.0


def rec(workload: str, t: float, **kw: Any) -> RequestRecord:
    team = "lim" if workload == "capped" else "a"
    base: dict[str, Any] = dict(started_at=T0 + t, workload=workload, kind="short_chat",
                                team=team, model="gemma-4", stream=True, status=200,
                                pool="p1", ttft_s=0.2, tpot_s=0.01, e2e_s=1.0,
                                prompt_tokens=10, completion_tokens=20)  # fmt: skip
    base.update(kw)
    return RequestRecord(**base)


LIMITED: dict[str, Any] = dict(status=429, error="rate_limit_exceeded", pool="", ttft_s=None,
                               tpot_s=None, prompt_tokens=0, completion_tokens=0)  # fmt: skip
FAILED: dict[str, Any] = dict(status=500, error="http_500", ttft_s=None, tpot_s=None, pool="",
                              message="engine | failed\nbadly", request_id="rid-6")  # fmt: skip
RECORDS = [
    rec("chat", 1),
    rec("chat", 2, ttft_s=1.5),  # misses TTFT
    rec("chat", 3, tpot_s=0.2, pool="p2"),  # misses TPOT
    rec("chat", 4, e2e_s=3.0, pool="p2"),
    rec("docs", 5, ttft_s=3.0, e2e_s=6.0),  # within its own looser TTFT
    rec("docs", 6, **FAILED),
    rec("capped", 7, request_id="rid-7"),
    rec("capped", 8, **LIMITED, message="team requests per minute limit reached"),
    rec("capped", 9, **LIMITED, request_id="rid-9"),
]


def _report() -> Any:
    return build_report(
        RECORDS, workload=WORKLOAD, workload_file="w.yaml", host="http://gw",
        shape=ShapeSpec(kind="constant", duration_s=20, users=3), started=T0, ended=T0 + 20,
    )  # fmt: skip


def test_a_request_meets_its_slo_only_within_every_objective() -> None:
    slo = Slo(ttft_s=1.0, tpot_s=0.05, e2e_s=10)
    assert meets(rec("chat", 0), slo)
    assert not meets(rec("chat", 0, ttft_s=1.01), slo)
    assert not meets(rec("chat", 0, tpot_s=0.06), slo)
    assert not meets(rec("chat", 0, e2e_s=11), slo)
    assert not meets(rec("chat", 0, error="http_500", status=500), slo)
    # a one-token stream has no TPOT; an unstreamed answer no TTFT: neither is held to them
    assert meets(rec("chat", 0, tpot_s=None), slo)
    assert meets(rec("chat", 0, stream=False, ttft_s=None, tpot_s=None), slo)


def test_attainment_leaves_out_expected_429s_but_counts_other_errors() -> None:
    report = _report()
    chat, docs, capped = report.by_workload
    assert (chat.served, chat.slo_met, chat.slo_attainment) == (4, 2, 0.5)
    assert (docs.served, docs.slo_met, docs.errors) == (2, 1, 1)
    assert (capped.requests, capped.served, capped.slo_met, capped.rate_limited) == (3, 1, 1, 2)
    assert [chat.holds, docs.holds, capped.holds] == [False, False, True]
    assert report.verdict == "SLOs missed"
    totals = report.totals
    assert (totals.requests, totals.served, totals.slo_met) == (9, 7, 4)
    assert totals.goodput_rps == pytest.approx(4 / 20)
    assert totals.throughput_rps == pytest.approx(6 / 20)


def test_errors_and_429s_are_broken_down() -> None:
    report = _report()
    assert report.errors_by_type == {"http_500": 1, "rate_limit_exceeded": 2}
    # the first message of each, and the requests to look up (none for record 8: no id)
    examples = {kind: e.model_dump() for kind, e in report.error_examples.items()}
    assert examples == {
        "http_500": {"message": "engine | failed\nbadly", "request_ids": ["rid-6"]},
        "rate_limit_exceeded": {
            "message": "team requests per minute limit reached",
            "request_ids": ["rid-9"],
        },
    }
    assert report.rate_limited_by_team == {"lim": {"rate_limit_exceeded": 2}}
    pools = {p.name: p.succeeded for p in report.by_pool}
    assert pools == {"(none)": 0, "p1": 4, "p2": 2}
    assert report.workloads_ran == ["chat", "docs", "capped"]


def test_percentiles_and_the_timeline_follow_the_records() -> None:
    report = _report()
    chat = report.by_workload[0]
    assert chat.ttft.count == 4 and chat.ttft.max == 1.5
    assert chat.e2e.p50 == pytest.approx(1.0)
    p2 = [p for p in report.timeline if p.pool == "p2" and p.requests]
    assert [p.t_s for p in p2] == [0.0, 5.0]  # finished at 4 s and 7 s, 5-second windows
    first, second, *_ = report.totals_timeline  # per second, by when requests finished
    assert first.succeeded_rps * 5 == 3 and first.goodput_rps * 5 == 1
    assert (second.succeeded_rps * 5, second.errors_rps * 5, second.rate_limited_rps * 5) == (
        2,
        1,
        1,
    )


def test_records_round_trip_and_the_report_files_are_written(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    writer = RecordWriter(path)
    for r in RECORDS:
        writer.write(r)
    writer.close()
    with path.open("a") as f:
        f.write('{"started_at": 1, "work')  # a line a killed process left half-written
    assert list(read_records(path)) == RECORDS
    result = write_report(_report(), tmp_path, path, tmp_path / "locust.log")
    text = result.report_md.read_text()
    assert text.startswith("# Load test: SLOs missed")
    assert "| lim | rate_limit_exceeded | 2 |" in text
    assert "| http_500 | 1 | engine \\| failed badly | rid-6 |" in text  # one cell, one line
    for plot in result.plots:
        assert plot.read_bytes().startswith(b"\x89PNG") and plot.name in text
    assert {p.name for p in result.plots} >= {"latency_ttft.png", "throughput.png"}
    assert '"verdict": "SLOs missed"' in result.report_json.read_text()


def test_the_report_names_workloads_that_sent_no_request(tmp_path: Path) -> None:
    """With fewer users than workloads, Locust leaves some workloads without a user: a verdict
    of "SLOs hold" says nothing about them, and the report says so. A workload switched off
    (weight 0) is not meant to run and is not named."""
    workloads = [
        *WORKLOAD.model_dump()["workloads"],
        {"name": "vision", "kind": "vision", "team": "a"},
        {"name": "off", "kind": "short_chat", "team": "a", "weight": 0},
    ]
    wide = WORKLOAD.model_validate({**WORKLOAD.model_dump(), "workloads": workloads})
    records = [r for r in RECORDS if r.ok]
    report = build_report(
        records, workload=wide, workload_file="w.yaml", host="http://gw",
        shape=ShapeSpec(kind="constant", duration_s=20, users=3), started=T0, ended=T0 + 20,
    )  # fmt: skip
    assert report.not_run == ["vision"] and report.no_user == ["vision"]  # 4th of 3 users
    text = write_report(report, tmp_path, tmp_path / "r.jsonl", tmp_path / "l.log").report_md
    assert "Not tested: vision got no user at 3 users" in text.read_text()
    # with a user of its own it still sent nothing: its user was thinking when the test ended
    staffed = build_report(
        records, workload=wide, workload_file="w.yaml", host="http://gw",
        shape=ShapeSpec(kind="constant", duration_s=20, users=4), started=T0, ended=T0 + 20,
    )  # fmt: skip
    assert staffed.not_run == ["vision"] and staffed.no_user == []
    (tmp_path / "staffed").mkdir()
    later = write_report(staffed, tmp_path / "staffed", tmp_path / "r.jsonl", tmp_path / "l.log")
    assert "Not tested: vision had users that sent no request" in later.report_md.read_text()
    # four users are enough, but at one user every 10 s only two start in 20 s
    (tmp_path / "slow").mkdir()
    slow = build_report(
        records, workload=wide, workload_file="w.yaml", host="http://gw",
        shape=ShapeSpec(kind="constant", duration_s=20, users=4, spawn_rate=0.1),
        started=T0, ended=T0 + 20,
    )  # fmt: skip
    assert slow.not_run == ["vision"] and slow.no_user == ["vision"]
    told = write_report(slow, tmp_path / "slow", tmp_path / "r.jsonl", tmp_path / "l.log")
    assert (
        "Not tested: vision got no user: at --spawn-rate 0.1 at most 2 of 4 users start in 20 s"
        in told.report_md.read_text()
    )
    # a report where every workload ran says nothing of the kind
    assert _report().not_run == [] and _report().cut_short == []
    (tmp_path / "all").mkdir()
    every = write_report(_report(), tmp_path / "all", tmp_path / "r.jsonl", tmp_path / "l.log")
    assert "Not tested" not in every.report_md.read_text()


def test_the_report_names_workloads_whose_every_request_was_cut_short(tmp_path: Path) -> None:
    """A long-context request still running when the test ends is left out of attainment: a
    workload with only such requests sent something, yet the verdict says nothing of it."""
    stopped: dict[str, Any] = dict(status=0, error=STOPPED, pool="", ttft_s=None, tpot_s=None,
                                   e2e_s=0.9, completion_tokens=0)  # fmt: skip
    records = [r for r in RECORDS if r.workload != "docs"] + [rec("docs", 19, **stopped)]
    report = build_report(
        records, workload=WORKLOAD, workload_file="w.yaml", host="http://gw",
        shape=ShapeSpec(kind="constant", duration_s=20, users=3), started=T0, ended=T0 + 20,
    )  # fmt: skip
    assert (report.not_run, report.cut_short) == ([], ["docs"])
    assert report.verdict == "SLOs missed"  # chat's 2 of 4 are below 75%, whatever docs did
    text = write_report(report, tmp_path, tmp_path / "r.jsonl", tmp_path / "l.log").report_md
    assert "Not measured: every request docs sent was cut short" in text.read_text()
