"""`gemma-fleet teams|keys|usage` against a running gateway with a real Redis behind it."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from gateway_harness import RunningGateway
from secret_volume import SecretVolume

from gemma_fleet.cli.main import main
from gemma_fleet.cli.teams import USAGE_COLUMNS

from .conftest import ADMIN


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit status, stdout + stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def cli(capsys: pytest.CaptureFixture[str], gw: RunningGateway, *args: str) -> tuple[int, str]:
    """`run` against `gw` with the admin key."""
    return run(capsys, *args, "--url", gw.url, "--admin-key", ADMIN)


def test_a_team_and_key_made_with_the_cli_serve_and_show_usage(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli(capsys, gateway, "teams", "delete", "cli-team")
    code, out = cli(
        capsys, gateway, "teams", "create", "cli-team", "--models", "e2b", "--rpm", "120"
    )
    assert code == 0 and "cli-team" in out and "120" in out
    code, out = cli(capsys, gateway, "keys", "create", "--team", "cli-team", "--name", "ci")
    assert code == 0
    key = out.strip().splitlines()[-1]
    assert key.startswith("gfk_")
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
    sdk.chat.completions.create(
        model="e2b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    code, out = cli(capsys, gateway, "usage", "--team", "cli-team", "--json")
    assert code == 0 and '"requests": 1' in out
    # Piped (a file, a log), rich's 80 columns split the headers: "reque" over "sts".
    monkeypatch.delenv("COLUMNS", raising=False)
    code, out = cli(capsys, gateway, "usage", "--team", "cli-team")
    header = next(line for line in out.splitlines() if "day" in line)
    assert code == 0 and all(f" {name} " in header for name in USAGE_COLUMNS), out
    code, out = cli(capsys, gateway, "keys", "list", "--team", "cli-team")
    key_id = key.split("_")[1]
    assert code == 0 and key_id in out and key not in out
    code, out = cli(capsys, gateway, "keys", "revoke", key_id)
    assert code == 0 and "revoked" in out
    with pytest.raises(openai.AuthenticationError):
        sdk.chat.completions.create(
            model="e2b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["teams", "create", "Not A Name"], "name"),
        (["teams", "show", "no-such-team"], "404 no team 'no-such-team'"),
        (["teams", "update", "no-such-team"], "nothing to change"),
        (["keys", "create", "--team", "x", "--expires-in-days", "-1"], "must be positive"),
        (["teams", "create", "big", "--budget", str(2**53 + 1)], "limits.token_budget"),
        (
            ["teams", "create", "typo", "--models", "e2b,gemma4"],
            "400 allowed_models[1]: 'gemma4' is no pool, model or alias this fleet serves; known:",
        ),
    ],
)
def test_bad_cli_input_is_one_line_and_exit_2(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out = cli(capsys, gateway, *args)
    assert code == 2
    assert message in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1


def test_an_unreachable_gateway_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["teams", "list", "--url", "http://127.0.0.1:9", "--admin-key", ADMIN])
    assert exited.value.code == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_cli_update_changes_only_the_limits_given(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, gateway, "teams", "delete", "cli-partial")
    code, _ = cli(
        capsys, gateway, "teams", "create", "cli-partial", "--rpm", "600", "--tpm", "200000",
        "--concurrent", "32", "--budget", "50000000", "--budget-period", "day",
    )  # fmt: skip
    assert code == 0
    code, out = cli(capsys, gateway, "teams", "update", "cli-partial", "--rpm", "1200", "--json")
    assert code == 0, out
    assert json.loads(out)["limits"] == {
        "requests_per_minute": 1200,
        "tokens_per_minute": 200_000,
        "max_concurrent_requests": 32,
        "token_budget": 50_000_000,
        "budget_period": "day",
    }


def test_the_openai_base_url_that_up_prints_works_as_url(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` prints http://…/v1; pasted as --url it answered `GET /admin/teams: 404 Not Found`.
    Names in the tables are whole at 80 columns (they were folded: `lt-batch-l` / `imited`)."""
    monkeypatch.setenv("COLUMNS", "80")
    cli(capsys, gateway, "teams", "delete", "cli-a-rather-long-team-name")
    code, out = cli(capsys, gateway, "teams", "create", "cli-a-rather-long-team-name")
    assert code == 0, out
    try:
        main(["teams", "list", "--url", gateway.url + "/v1/", "--admin-key", ADMIN])
    except SystemExit as exc:
        pytest.fail(f"exit {exc.code}: {capsys.readouterr().err}")
    out = capsys.readouterr().out
    assert "│ cli-a-rather-long-team-name " in out, out


def test_the_admin_key_file_a_chart_pod_names_is_what_the_cli_sends(
    gateway: RunningGateway,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """In a chart's Ray pod GEMMA_FLEET_ADMIN_KEY_FILE names the mounted Secret: the CLI run
    there sends what the file holds now (a Secret's trailing newline dropped), and after a
    rotation the new content, not a key it read before or the local fleet's."""
    secret = SecretVolume(tmp_path / "admin", {"admin-key": ADMIN + "\n"})
    monkeypatch.delenv("GEMMA_FLEET_ADMIN_KEY", raising=False)
    monkeypatch.setenv("GEMMA_FLEET_ADMIN_KEY_FILE", str(secret.path("admin-key")))
    cli(capsys, gateway, "teams", "delete", "cli-from-file")
    code, out = run(capsys, "teams", "create", "cli-from-file", "--url", gateway.url)
    assert code == 0 and "cli-from-file" in out, out
    secret.update({"admin-key": "not-the-admin-key-" + "q" * 24})
    code, out = run(capsys, "teams", "show", "cli-from-file", "--url", gateway.url)
    assert code == 2 and "401" in out, out
    monkeypatch.delenv("GEMMA_FLEET_ADMIN_KEY_FILE")
    other = SecretVolume(tmp_path / "other", {"admin-key": ADMIN})
    code, out = run(
        capsys, "teams", "show", "cli-from-file", "--url", gateway.url,
        "--admin-key-file", str(other.path("admin-key")),
    )  # fmt: skip
    assert code == 0 and "cli-from-file" in out, out


@pytest.mark.parametrize(
    ("content", "extra", "says"),
    [
        (None, [], "--admin-key-file: cannot read {path}: No such file or directory"),
        ("\n", [], "--admin-key-file ({path}) is set but empty"),
        ("short", [], "--admin-key-file ({path}) must be at least 24 characters"),
        (ADMIN, ["--admin-key", ADMIN], "--admin-key (GEMMA_FLEET_ADMIN_KEY) and --admin-key-file"),
    ],
)
def test_an_admin_key_file_that_cannot_be_used_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    content: str | None,
    extra: list[str],
    says: str,
) -> None:
    monkeypatch.delenv("GEMMA_FLEET_ADMIN_KEY", raising=False)
    path = tmp_path / "admin-key"
    if content is not None:
        path.write_text(content)
    # Nothing listens on port 9: the key is refused before any call is tried.
    code, out = run(
        capsys, "teams", "list", "--url", "http://127.0.0.1:9", "--admin-key-file", str(path),
        *extra,
    )  # fmt: skip
    assert code == 2
    assert says.format(path=path) in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1
    if content and content.strip():
        assert content.strip() not in out  # never the value itself
