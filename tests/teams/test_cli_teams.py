"""`gemma-fleet teams|keys|usage` against a running gateway with a real Redis behind it."""

from __future__ import annotations

import json

import openai
import pytest
from gateway_harness import RunningGateway

from gemma_fleet.cli.main import main

from .conftest import ADMIN


def cli(capsys: pytest.CaptureFixture[str], gw: RunningGateway, *args: str) -> tuple[int, str]:
    """Run the CLI in-process; (exit status, stdout + stderr)."""
    try:
        main([*args, "--url", gw.url, "--admin-key", ADMIN])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_a_team_and_key_made_with_the_cli_serve_and_show_usage(
    gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
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
