"""PoolServer replaces one private method of Ray Serve LLM's LLMServer, `_start_engine`, to
skip the usage telemetry actor when Ray's usage stats are off. That is only safe while Ray's
method does what this override was written against: pin it."""

from __future__ import annotations

import hashlib
import inspect

from ray.llm._internal.serve.core.server.llm_server import LLMServer

# sha256 of LLMServer._start_engine's source in Ray 2.60.0: start the engine, push Ray Serve
# LLM's telemetry report (the TelemetryAgent actor), record the direct-streaming usage tag.
START_ENGINE_SHA256 = "aaab45c92bca2008"


def test_the_start_this_override_replaces_is_still_rays_own() -> None:
    source = inspect.getsource(LLMServer._start_engine)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == START_ENGINE_SHA256, (
        "Ray's LLMServer._start_engine changed: check that PoolServer._start_engine "
        "(deployments/engines/server.py) still does everything it must besides telemetry, "
        f"then pin the new source here:\n{source}"
    )
