"""Fixtures of the gateway suite; the harness itself is tests/gateway_harness.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools


@pytest.fixture(scope="package")
def gateway_server() -> Iterator[RunningGateway]:
    with serve_gateway(fleet_settings(), simulated_pools) as running:
        yield running
