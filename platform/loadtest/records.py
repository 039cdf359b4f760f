"""One line per HTTP request the virtual users made: what the report is computed from.

Locust's own statistics keep only aggregates; the report needs every request (percentiles over
time per pool, SLO attainment per request, 429s per team), so each Locust process appends these
records to a JSON-lines file as requests finish.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gemma_fleet.loadtest.apis import Api

# Error types: a bounded vocabulary, so "errors by type" stays readable.
RATE_LIMITED = "rate_limit_exceeded"  # 429: requests or tokens per minute
CONCURRENCY_LIMITED = "concurrency_limit_exceeded"  # 429: too many in flight
QUOTA = "insufficient_quota"  # 429: the day's or month's token budget is spent
EXPECTED_429 = frozenset({RATE_LIMITED, CONCURRENCY_LIMITED, QUOTA})
STOPPED = "stopped_by_load_test"  # the test ended or ramped down mid-request


class RequestRecord(BaseModel):
    """One HTTP request as the client saw it."""

    model_config = ConfigDict(extra="forbid")

    started_at: float = Field(description="Unix time the request was sent")
    workload: str
    kind: str
    api: Api = Field("chat", description="the API called: chat, messages or responses")
    team: str
    model: str = Field(description="the model the request named")
    step: int = Field(0, description="position within a multi-request task (turn, tool step)")
    stream: bool
    status: int = Field(description="HTTP status; 0 when no answer arrived")
    pool: str = Field("", description="x-gemma-fleet-pool: the pool that served it")
    route: str = Field("", description="x-gemma-fleet-route: why that pool")
    request_id: str = Field(
        "", description="x-request-id: the gateway's id for it (its trace's gemma_fleet.request_id)"
    )
    error: str | None = Field(None, description="error type; None when it succeeded")
    message: str = Field("", description="the error's message, shortened")
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def expected_429(self) -> bool:
        return self.status == 429 and self.error in EXPECTED_429


class RecordWriter:
    """Appends records to a JSON-lines file, one flushed line each (a crash loses none)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, record: RequestRecord) -> None:
        self._file.write(record.model_dump_json() + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_records(path: Path) -> Iterator[RequestRecord]:
    """Every record in `path`; a last line cut short by a killed process is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                yield RequestRecord.model_validate(json.loads(line))
            except ValueError:
                continue
