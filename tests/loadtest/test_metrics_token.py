"""The load test's cross-check against a real gateway that sets GEMMA_FLEET_METRICS_TOKEN: with
`--metrics-token` (or the variable) it reads the gateway's counters; without it the run still
reports, and says the 401 and which token to set instead of "could not be read"."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_harness import RunningGateway, serve_with_metrics_token
from secret_volume import SecretVolume

from gemma_fleet.cli.main import main
from gemma_fleet.loadtest.gateway_counters import REQUESTS, ScrapeRefused, scrape

TOKEN = "metrics-" + "l" * 32
HINT = (
    "set --metrics-token / GEMMA_FLEET_METRICS_TOKEN "
    "(or --metrics-token-file / GEMMA_FLEET_METRICS_TOKEN_FILE)"
)
WORKLOAD = """\
seed: 3
teams: [{name: lt-a}, {name: lt-b}]
workloads:
  - {name: chat-a, kind: short_chat, team: lt-a, max_tokens: 8, think_time_s: [0.1, 0.2]}
  - {name: chat-b, kind: short_chat, team: lt-b, max_tokens: 8, think_time_s: [0.1, 0.2]}
"""


@pytest.fixture(scope="module")
def guarded() -> Iterator[RunningGateway]:
    with serve_with_metrics_token(TOKEN) as gw:
        yield gw


def test_a_scrape_names_the_missing_or_wrong_token(guarded: RunningGateway) -> None:
    with pytest.raises(ScrapeRefused) as caught:
        scrape(guarded.url, settle_s=0)
    assert str(caught.value) == (
        f"GET {guarded.url}/metrics: 401: no metrics token was sent; {HINT}"
    )
    with pytest.raises(ScrapeRefused, match="the metrics token was refused"):
        scrape(guarded.url, settle_s=0, token=TOKEN + "x")
    body = {"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert guarded.post("/v1/chat/completions", json=body).status_code == 200
    reading = scrape(guarded.url, settle_s=0, token=TOKEN)
    assert reading.complete
    assert any(name == REQUESTS for name, _ in reading.counters)


def _loadtest(
    gw: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[dict[str, object], str]:
    workload = tmp_path / "workload.yaml"
    workload.write_text(WORKLOAD)
    out = tmp_path / "report"
    args = ["loadtest", "--host", gw.url, "--workload", str(workload), "--out", str(out)]
    args += ["--duration", "3s", "--users", "2", "--spawn-rate", "2", *extra]
    main(args)  # returns on success; a refusal would exit 2
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report, capsys.readouterr().out


@pytest.mark.slow
def test_loadtest_without_the_token_reports_the_401_and_the_remedy(
    guarded: RunningGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GEMMA_FLEET_METRICS_TOKEN", raising=False)
    report, printed = _loadtest(guarded, tmp_path, capsys)
    assert report["gateway"] is None
    note = str(report["gateway_note"])
    assert note == f"GET {guarded.url}/metrics: 401: no metrics token was sent; {HINT}: no " + (
        "cross-check."
    )
    assert note in " ".join(printed.split())  # the CLI says it too, not only the report
    assert note in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("given_as", ["variable", "file"])
def test_loadtest_with_the_token_checks_the_gateways_counters(
    guarded: RunningGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    given_as: str,
) -> None:
    """The token as a value, or as the file a chart pod's GEMMA_FLEET_METRICS_TOKEN_FILE names
    (a Secret's trailing newline and all)."""
    if given_as == "variable":
        monkeypatch.setenv("GEMMA_FLEET_METRICS_TOKEN", TOKEN)
    else:
        monkeypatch.delenv("GEMMA_FLEET_METRICS_TOKEN", raising=False)
        secret = SecretVolume(tmp_path / "metrics", {"metrics-token": TOKEN + "\n"})
        monkeypatch.setenv("GEMMA_FLEET_METRICS_TOKEN_FILE", str(secret.path("metrics-token")))
    report, _ = _loadtest(guarded, tmp_path, capsys)
    gateway = report["gateway"]
    assert isinstance(gateway, dict) and gateway["rows"], report["gateway_note"]
    # the refusal as worded ("GET <url>: 401: ..."), not a port that happens to hold "401"
    assert ": 401: " not in str(report["gateway_note"])


def test_a_token_with_a_trailing_newline_reads_the_counters() -> None:
    """As the autoscaler's: a token from a Secret made from a file ends with a newline; the
    scrape sent it in the header, which httpx refused with an error quoting the token (logged
    by the run)."""
    token = TOKEN + "\n"
    with serve_with_metrics_token(token) as gw:
        try:
            reading = scrape(gw.url, settle_s=0, token=token)
        except Exception as exc:
            assert TOKEN not in str(exc)
            raise
        assert reading.complete
