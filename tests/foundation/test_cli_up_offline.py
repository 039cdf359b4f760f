"""`gemma-fleet up` and `loadtest --local` as a user runs them, with `run_fleet` replaced: what
they print once the fleet is up, and what they refuse before starting anything. No Ray."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gemma_fleet.cli import up as up_cli
from gemma_fleet.cli.main import main
from gemma_fleet.deployments.fleet.team_store import LocalTeams
from gemma_fleet.deployments.pools import load_fleet
from gemma_fleet.teams.embedded import EmbeddedRedis

KEY = "gfk_abcdefghijkl_" + "S" * 43
ADMIN = "A" * 43


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in this process; (exit status, stdout, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # What rich reads for a Console's width: an 80-column terminal, a log file, a CI log.
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def fake_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_fleet yields an up fleet at once; SIGINT (as Ctrl-C) a moment later stops `up`."""
    spec = load_fleet("default")

    @contextmanager
    def run_fleet(*args: Any, **kwargs: Any) -> Iterator[Any]:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        yield SimpleNamespace(
            fleet=spec,
            base_url="http://127.0.0.1:8000/v1",
            models=[p.name for p in spec.model_pools],
            teams=LocalTeams(api_key=KEY, admin_key=ADMIN),
            cut_drain=threading.Event(),
        )

    monkeypatch.setattr(up_cli, "run_fleet", run_fleet)
    monkeypatch.setattr(up_cli, "require_free_ports", lambda *a, **k: None, raising=False)


@pytest.mark.usefixtures("narrow_terminal", "fake_fleet")
def test_the_printed_curl_command_and_model_ids_survive_an_80_column_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pasting the printed curl must send the whole key; the ids shown must be the ids served.

    Rich broke both at 80 columns: a newline inside the quoted Authorization header (the key
    pasted broken) and `gemma-4-26b…` in the pools table."""
    code, out, err = run_cli(capsys, "up", "--state-dir", str(tmp_path))
    assert code == 0, err
    curl = next(line for line in out.splitlines() if line.strip().startswith("curl "))
    argv = shlex.split(curl)
    headers = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-H"]
    assert f"Authorization: Bearer {KEY}" in headers
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "gemma-4-e2b"
    assert any(line.endswith(KEY) for line in out.splitlines())
    for pool in ("gemma-4-e2b", "gemma-4-e4b", "gemma-4-26b-a4b", "gemma-4-31b"):
        assert f"│ {pool} " in out, f"{pool} is cut or wrapped in:\n{out}"


@contextmanager
def listening(reuse_port: bool) -> Iterator[int]:
    """A listener on a free loopback port; SO_REUSEPORT as Ray Serve's HTTP proxy binds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def no_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting a fleet is the failure: the command must refuse before it."""

    def run_fleet(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("started a fleet on a port in use")

    monkeypatch.setattr(up_cli, "run_fleet", run_fleet)
    monkeypatch.setattr("gemma_fleet.cli.loadtest.local_fleet_host", run_fleet)


@pytest.mark.usefixtures("no_fleet")
def test_up_refuses_an_http_port_another_fleet_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second fleet on the first one's port did not fail: Serve's proxy binds with
    SO_REUSEPORT, both listened, and requests went to either fleet (404s and 401s)."""
    with listening(reuse_port=True) as port:
        code, _, err = run_cli(
            capsys, "up", "--port", str(port), "--ray-port", str(_free_port()),
            "--state-dir", str(tmp_path),
        )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and f"--port {port}" in err and "in use" in err


@pytest.mark.usefixtures("no_fleet")
def test_up_refuses_a_ray_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Ray's head asserted about session names, with a traceback, on a GCS port in use."""
    with listening(reuse_port=False) as ray_port:
        code, _, err = run_cli(
            capsys, "up", "--port", str(_free_port()), "--ray-port", str(ray_port),
            "--state-dir", str(tmp_path),
        )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and f"--ray-port {ray_port}" in err


@pytest.mark.usefixtures("no_fleet")
def test_loadtest_local_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    workload = Path(__file__).parents[2] / "loadtest" / "workloads" / "chat.yaml"
    with listening(reuse_port=True) as port:
        code, _, err = run_cli(
            capsys, "loadtest", "--local", "--workload", str(workload), "--duration", "10s",
            "--port", str(port), "--ray-port", str(_free_port()),
        )  # fmt: skip
    assert code == 2
    assert err.count("\n") == 1 and f"--port {port}" in err


@pytest.mark.usefixtures("no_fleet")
def test_up_refuses_a_state_folder_a_running_fleet_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `up` on the same --state-dir (other ports) unlinked the first fleet's Redis
    socket and started a second redis-server on the same append-only file."""
    first = EmbeddedRedis(tmp_path / "redis")
    first.start()
    try:
        code, _, err = run_cli(
            capsys, "up", "--port", str(_free_port()), "--ray-port", str(_free_port()),
            "--state-dir", str(tmp_path),
        )  # fmt: skip
        assert code == 2
        assert err.count("\n") == 1 and str(tmp_path) in err and "--state-dir" in err
        assert first.socket_path.exists()
    finally:
        first.stop()
    # A socket file a fleet that is gone left behind does not block the next one.
    stale = first.socket_path
    stale.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(stale))  # the file exists; nothing listens
    with pytest.raises(AssertionError, match="started a fleet"):
        main(["up", "--port", str(_free_port()), "--ray-port", str(_free_port()),
              "--state-dir", str(tmp_path)])  # fmt: skip


@pytest.mark.usefixtures("no_fleet")
def test_loadtest_local_takes_a_state_folder_and_refuses_one_a_running_fleet_uses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`loadtest --local` always used ~/.gemma-fleet, so it was refused while `up` ran on it
    (and the refusal could name no option to change)."""
    workload = Path(__file__).parents[2] / "loadtest" / "workloads" / "chat.yaml"
    args = ["loadtest", "--local", "--workload", str(workload), "--duration", "10s"]
    busy, free = tmp_path / "busy", tmp_path / "free"
    first = EmbeddedRedis(busy / "redis")
    first.start()
    try:
        code, _, err = run_cli(
            capsys, *args, "--port", str(_free_port()), "--ray-port", str(_free_port()),
            "--state-dir", str(busy),
        )  # fmt: skip
        assert code == 2
        assert err.count("\n") == 1 and str(busy) in err and "--state-dir" in err
    finally:
        first.stop()
    started: list[Path] = []

    def local_fleet_host(fleet: Any, settings: Any) -> Any:
        started.append(settings.state_dir)
        raise AssertionError("started")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("gemma_fleet.cli.loadtest.local_fleet_host", local_fleet_host)
        with pytest.raises(AssertionError, match="started"):
            main([*args, "--port", str(_free_port()), "--ray-port", str(_free_port()),
                  "--state-dir", str(free)])  # fmt: skip
    assert started == [free]
