"""The autoscaler against a real gateway that sets GEMMA_FLEET_METRICS_TOKEN: it reads the
gateway's /metrics with `--metrics-token` (or the variable), and without it every step fails
with one line naming the token, not a parse error or "waiting"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from autoscale_process import stop
from gateway_harness import RunningGateway, serve_with_metrics_token
from prometheus_client.parser import text_string_to_metric_families
from secret_volume import SecretVolume
from text_endpoint import TextEndpoint, serving_text

from gemma_fleet.autoscaler.metrics_source import MetricsError, MetricsSource, http_fetch
from gemma_fleet.cli.main import main
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet
from gemma_fleet.teams.credentials import RECHECK_S

TOKEN = "metrics-" + "t" * 32
EXE = shutil.which("gemma-fleet", path=str(Path(sys.executable).parent))
HINT = "401: set --metrics-token / GEMMA_FLEET_METRICS_TOKEN"


@pytest.fixture(scope="module")
def guarded() -> Iterator[RunningGateway]:
    with serve_with_metrics_token(TOKEN) as gw:
        yield gw


@pytest.fixture
def fleet() -> FleetSpec:
    return load_fleet(default_fleet_path())


def _chat(gw: RunningGateway) -> None:
    body = {"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    assert gw.post("/v1/chat/completions", json=body).status_code == 200


def test_a_scrape_without_the_token_names_it(guarded: RunningGateway, fleet: FleetSpec) -> None:
    url = guarded.url + "/metrics"
    with pytest.raises(MetricsError) as caught:
        http_fetch()(url)
    assert str(caught.value).startswith(f"GET {url}: {HINT}")
    with pytest.raises(MetricsError, match="the metrics token was refused"):
        http_fetch(token=TOKEN[:-1] + "x")(url)
    # Through the reader: the step's error is the 401 and its remedy, not "not Prometheus text".
    source = MetricsSource([url], fleet)
    with pytest.raises(MetricsError) as caught:
        source.read()
    assert f"no metrics URL answered: GET {url}: {HINT}" in str(caught.value)
    assert "Prometheus" not in str(caught.value)


def test_the_token_reads_the_gateways_counters(guarded: RunningGateway, fleet: FleetSpec) -> None:
    url = guarded.url + "/metrics"
    source = MetricsSource([url], fleet, fetch=http_fetch(token=TOKEN))
    assert source.read() is None  # the first scrape: no rate yet, and no error
    _chat(guarded)
    time.sleep(0.05)
    reading = source.read()
    assert reading is not None
    # Read and differenced: the gateway's pools (not the default fleet's) are named.
    assert reading.complete and "e2b" in reading.unknown_pools


@pytest.fixture
def open_endpoint() -> Iterator[TextEndpoint]:
    """Any /metrics that needs no token (here vLLM-named series, as an engine's)."""
    body = b'vllm:request_success_total{model_name="gemma-4-e2b"} 3.0\n'
    with serving_text(lambda: body) as endpoint:
        yield endpoint


def test_the_token_goes_only_to_the_url_that_asks_for_it(
    guarded: RunningGateway, fleet: FleetSpec, open_endpoint: TextEndpoint
) -> None:
    """Scraping the gateway and an open endpoint with one token: the gateway is read with it,
    the open endpoint never receives it (it could log it, or be someone else's)."""
    urls = [guarded.url + "/metrics", open_endpoint.url]
    source = MetricsSource(urls, fleet, fetch=http_fetch(token=TOKEN))
    assert source.read() is None
    _chat(guarded)
    time.sleep(0.05)
    reading = source.read()
    assert reading is not None and reading.complete, reading
    assert "e2b" in reading.unknown_pools  # the gateway's counters were read
    assert reading.pools["gemma-4-e2b"].completed_per_s == 0.0  # and the engine's
    assert open_endpoint.authorizations == [None, None]


def test_autoscale_once_without_the_token_is_one_line_naming_it(
    guarded: RunningGateway,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GEMMA_FLEET_METRICS_TOKEN", raising=False)
    url = guarded.url + "/metrics"
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", "--fleet", str(default_fleet_path()), "--metrics-url", url, "--once"])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert HINT in line


def _steps(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=5).text
    return {
        s.labels["result"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "gemma_fleet_autoscaler_steps_total"
    }


def test_autoscale_reads_with_the_token_from_the_environment(
    guarded: RunningGateway, tmp_path: Path
) -> None:
    """As the Helm chart runs it: the token in GEMMA_FLEET_METRICS_TOKEN (a secretKeyRef)."""
    assert EXE is not None, "gemma-fleet is not installed next to this interpreter"
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "GEMMA_FLEET_METRICS_TOKEN": TOKEN,
    }
    args = ["autoscale", "--fleet", str(default_fleet_path())]
    args += ["--metrics-url", guarded.url + "/metrics", "--interval", "300"]
    args += ["--status-port", str(port)]
    proc = subprocess.Popen(
        [EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 60
        steps: dict[str, float] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                steps = _steps(f"http://127.0.0.1:{port}")
            except httpx.TransportError:
                steps = {}
            if steps.get("waiting") or steps.get("failed"):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()[1]
        # The first scrape was read (waiting for a second one), not refused (failed).
        assert steps.get("waiting") == 1 and not steps.get("failed"), steps
    finally:
        err = stop(proc)
    # the refusal as the reader words it ("GET <url>: 401: ..."): a bare "401" also matched a
    # port the test had drawn (127.0.0.1:34017), and failed a run whose scrapes were fine
    assert ": 401: " not in err, err


def test_a_token_with_a_trailing_newline_reads_and_never_reaches_the_log() -> None:
    """The Helm chart gives the gateway and the autoscaler the same Secret value; one made from
    a file usually ends with a newline. httpx refused the header, and its error, which the
    autoscaler logs every step, quoted the header: the token itself."""
    token = TOKEN + "\n"
    with serve_with_metrics_token(token) as gw:
        url = gw.url + "/metrics"
        try:
            text = http_fetch(token=token)(url)
        except MetricsError as exc:
            assert TOKEN not in str(exc)  # the defect's worst half
            raise
        assert "gemma_fleet_gateway_replicas" in text


def test_a_rotated_token_file_is_taken_up_without_a_restart(tmp_path: Path) -> None:
    """As the chart runs both: the gateway and the autoscaler each read the token from their
    own pod's mount of one Secret (GEMMA_FLEET_METRICS_TOKEN_FILE), which the kubelet updates
    in each pod at its own moment. While the gateway has the new token and the autoscaler the
    old, its scrapes are refused with the 401's remedy; once its file has the new token, the
    same running fetcher reads again."""
    new = "metrics-new-" + "n" * 30
    gateway_mount = SecretVolume(tmp_path / "gateway", {"metrics-token": TOKEN})
    autoscaler_mount = SecretVolume(tmp_path / "autoscaler", {"metrics-token": TOKEN + "\n"})
    with serve_with_metrics_token(token_file=gateway_mount.path("metrics-token")) as gw:
        url = gw.url + "/metrics"
        fetch = http_fetch(token_file=autoscaler_mount.path("metrics-token"))
        assert "gemma_fleet_gateway_replicas" in fetch(url)
        gateway_mount.update({"metrics-token": new})
        refused = ""
        deadline = time.monotonic() + 5 * RECHECK_S
        while not refused and time.monotonic() < deadline:
            try:
                fetch(url)
                time.sleep(0.2)
            except MetricsError as exc:
                refused = str(exc)
        assert refused == (
            f"GET {url}: 401: the metrics token was refused: "
            "check --metrics-token-file / GEMMA_FLEET_METRICS_TOKEN_FILE"
        )
        autoscaler_mount.update({"metrics-token": new})
        assert "gemma_fleet_gateway_replicas" in fetch(url)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--metrics-token-file", "{missing}"], "the metrics token file {missing}: No such file"),
        (["--metrics-token-file", "{empty}"], "the metrics token file {empty} is empty"),
        (
            ["--metrics-token-file", "{empty}", "--metrics-token", TOKEN],
            "set --metrics-token or --metrics-token-file, not both",
        ),
    ],
    ids=["missing", "empty", "both"],
)
def test_autoscale_refuses_a_token_file_it_cannot_use_at_start(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    problem: str,
) -> None:
    monkeypatch.delenv("GEMMA_FLEET_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("GEMMA_FLEET_METRICS_TOKEN_FILE", raising=False)
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty"}
    paths["empty"].write_text("\n")
    args = [a.format(**paths) for a in args]
    url = "http://127.0.0.1:9/metrics"  # never reached: the check comes first
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", "--fleet", str(default_fleet_path()), "--metrics-url", url, *args])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert problem.format(**paths) in line
