"""`gemma-fleet loadtest` refuses bad input with one line on stderr and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_fleet.cli.main import main

CI_WORKLOAD = str(Path(__file__).with_name("workload-ci.yaml"))
# Users enough for every workload of the CI workload, but started one every 10 s.
SLOW_START = ["--workload", CI_WORKLOAD, "--host", "http://127.0.0.1:9", "--users", "8",
              "--spawn-rate", "0.1"]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--workload", CI_WORKLOAD], "either --host URL or --local"),
        (["--workload", CI_WORKLOAD, "--host", "http://x", "--local"], "either --host"),
        (["--workload", CI_WORKLOAD, "--host", "http://x", "--shape", "wave"], "--shape 'wave'"),
        (["--workload", CI_WORKLOAD, "--host", "http://x", "--duration", "soon"], "duration"),
        (["--workload", CI_WORKLOAD, "--host", "http://x", "--users", "0"], "--users"),
        (["--workload", "absent.yaml", "--host", "http://x"], "absent.yaml: cannot read"),
        (
            ["--workload", CI_WORKLOAD, "--host", "http://x", "--metrics-token-file", "absent"],
            "--metrics-token-file: cannot read absent: No such file or directory",
        ),
        (
            [
                "--workload",
                CI_WORKLOAD,
                "--host",
                "http://x",
                "--admin-key",
                "k" * 24,
                "--admin-key-file",
                CI_WORKLOAD,
            ],
            "--admin-key (GEMMA_FLEET_ADMIN_KEY) and --admin-key-file",
        ),
        # a CI gate that would fail after the whole run says so before it: 2 users leave six of
        # the CI workload's eight workloads without one
        (
            ["--workload", CI_WORKLOAD, "--host", "http://127.0.0.1:9", "--users", "2", "--strict"],
            "--strict: at 2 users Locust gives no user to long-context, vision, audio, tool-loop",
        ),
        # 8 users are enough, but at 0.1 a second only 3 start in 30 s
        (
            [*SLOW_START, "--duration", "30s", "--strict"],
            "--strict: at --spawn-rate 0.1 a 30 s test starts at most 3 of its 8 users",
        ),
        # nothing listens on port 9: said plainly, after the inputs were checked
        (["--workload", CI_WORKLOAD, "--host", "http://127.0.0.1:9"], "does not answer"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["loadtest", *args, "--out", str(tmp_path)])
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gemma-fleet: error:") and "\n" not in err
    assert says in err


def test_too_few_users_are_warned_of_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with pytest.raises(SystemExit) as done:
        main(["loadtest", "--workload", CI_WORKLOAD, "--host", "http://127.0.0.1:9",
              "--users", "3", "--out", str(tmp_path)])  # fmt: skip
    assert done.value.code == 2  # nothing listens on port 9: the warning came first
    out = " ".join(capsys.readouterr().out.split())
    assert "At 3 users Locust gives no user to" in out
    assert "--users 8 runs every workload" in out


def test_without_users_every_workload_gets_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The shipped mix needs 13 users to run all eleven workloads: the default takes 13, not
    10."""
    mix = str(Path(__file__).parents[2] / "loadtest" / "workloads" / "mix.yaml")
    with pytest.raises(SystemExit):
        main(
            ["loadtest", "--workload", mix, "--host", "http://127.0.0.1:9", "--out", str(tmp_path)]
        )
    out = " ".join(capsys.readouterr().out.split())
    assert "up to 13 users" in out and "gives no user" not in out


def test_a_test_shorter_than_a_think_time_is_warned_of(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """mix.yaml's long-context users think 10-30 s before each request: in a 20 s test one sent
    nothing, which the report could only say afterwards."""
    mix = str(Path(__file__).parents[2] / "loadtest" / "workloads" / "mix.yaml")
    with pytest.raises(SystemExit):
        main(["loadtest", "--workload", mix, "--host", "http://127.0.0.1:9", "--duration", "20s",
              "--out", str(tmp_path)])  # fmt: skip
    out = " ".join(capsys.readouterr().out.split())
    assert "A 20 s test may end before long-context (think 30 s) sends a first request" in out
    with pytest.raises(SystemExit):
        main(["loadtest", "--workload", mix, "--host", "http://127.0.0.1:9", "--duration", "1m",
              "--out", str(tmp_path)])  # fmt: skip
    assert "may end before" not in capsys.readouterr().out


def test_too_slow_a_spawn_rate_is_warned_of_before_the_run(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Locust starts users at --spawn-rate, the lightest workloads' last: in a short test they
    may never start, though --users would give them one."""
    args = ["loadtest", *SLOW_START, "--out", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*args, "--duration", "30s"])
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "At --spawn-rate 0.1 a 30 s test starts at most 3 of its 8 users, and Locust starts "
        "those of long-context, vision, tool-loop, json-extract, limited-pdf last" in out
    )
    assert "--spawn-rate 0.24 starts 8 users before the end" in out
    with pytest.raises(SystemExit):  # the later --spawn-rate wins; 0.23 starts 7 in 30 s
        main([*args, "--duration", "30s", "--spawn-rate", "0.23"])
    assert "starts at most 7 of its 8 users" in " ".join(capsys.readouterr().out.split())
    for enough in (
        ["--duration", "80s"],  # 8 start in 80 s
        ["--duration", "30s", "--spawn-rate", "0.24"],  # the 8th at 29.2 s
        ["--duration", "30s", "--shape", "spike"],  # a spike starts all at once
    ):
        with pytest.raises(SystemExit):
            main([*args, *enough])
        assert "--spawn-rate" not in capsys.readouterr().out
