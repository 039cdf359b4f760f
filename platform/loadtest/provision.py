"""Teams for a load test, through the gateway's admin API: each team in the workload file is
created (or, if it exists, given the file's limits) and issued a key for this run; the keys are
revoked when the run ends. Teams stay, so their usage history stays readable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from gemma_fleet.loadtest.workload import WorkloadFile


class ProvisionError(RuntimeError):
    """The admin API refused or could not be reached; the message says which call."""


def _check(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", {}).get("message", response.text)
        except ValueError:
            detail = response.text
        raise ProvisionError(f"{what}: HTTP {response.status_code}: {str(detail)[:200]}")


@contextmanager
def provisioned_teams(
    root_url: str, admin_key: str, workload: WorkloadFile
) -> Iterator[dict[str, str]]:
    """Yield {team: key} for every team in `workload`; revoke the keys afterwards."""
    issued: dict[str, str] = {}
    key_ids: list[str] = []
    headers = {"authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=root_url.rstrip("/"), headers=headers, timeout=30) as admin:
        try:
            for team in workload.teams:
                limits = team.limits.model_dump(mode="json")
                try:
                    made = admin.post("/admin/teams", json={"name": team.name, "limits": limits})
                    if made.status_code == 409:
                        made = admin.patch(f"/admin/teams/{team.name}", json={"limits": limits})
                    _check(made, f"creating team {team.name}")
                    key = admin.post(f"/admin/teams/{team.name}/keys", json={"name": "loadtest"})
                    _check(key, f"issuing a key for team {team.name}")
                except httpx.HTTPError as exc:
                    raise ProvisionError(f"admin API at {root_url}: {exc}") from exc
                body = key.json()
                issued[team.name] = body["key"]
                key_ids.append(body["id"])
            yield issued
        finally:
            for key_id in key_ids:
                # The fleet may be gone already (--local tears it down after an error).
                with contextlib.suppress(httpx.HTTPError):
                    admin.delete(f"/admin/keys/{key_id}")
