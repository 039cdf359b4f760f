"""MetricsSource against real Prometheus endpoints: the gateway's GatewayMetrics and the
simulator's vLLM-named SimulatorMetrics, each served over HTTP by prometheus_client's own
exporter on a loopback port, scraped through a simulated clock so rates are exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from gemma_fleet.autoscaler.metrics_source import MetricsError, MetricsSource
from gemma_fleet.deployments.engines.simulator.metrics import SimulatorMetrics
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet
from gemma_fleet.gateway.metrics import GatewayMetrics


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def labelled(metric: Any, **values: str) -> Any:
    """`metric.labels(...)` by name, blank for labels not given (the gateway's label set
    grows, e.g. `team`; the autoscaler sums over labels it does not read)."""
    return metric.labels(**{name: values.get(name, "") for name in metric.label_names})


@pytest.fixture
def serve_registry() -> Iterator[Any]:
    servers = []

    def serve(registry: CollectorRegistry) -> str:
        server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}/metrics"

    yield serve
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def fleet() -> FleetSpec:
    return load_fleet(default_fleet_path())


def test_gateway_counters_become_request_rates_per_catalog_model(
    serve_registry: Any, fleet: FleetSpec
) -> None:
    gateway = GatewayMetrics()
    url = serve_registry(gateway.registry)
    clock = Clock()
    source = MetricsSource([url], fleet, clock=clock)
    requests = gateway.requests
    labelled(requests, endpoint="chat", model="gemma-4", pool="gemma-4-e2b", status="200").inc(50)
    assert source.read() is None  # one scrape: no rate yet

    clock.t += 30
    # Through the alias and directly: both count for the pool that served them.
    labelled(requests, endpoint="chat", model="gemma-4", pool="gemma-4-e2b", status="200").inc(45)
    labelled(requests, endpoint="chat", model="gemma-4-e2b", pool="gemma-4-e2b", status="200").inc(
        15
    )
    labelled(requests, endpoint="chat", model="gemma-4-31b", pool="gemma-4-31b", status="200").inc(
        6
    )
    labelled(requests, endpoint="chat", model="gemma-4-31b", pool="gemma-4-31b", status="503").inc(
        3
    )
    # Refused before reaching a pool: no pool label, no demand on any pool.
    labelled(requests, endpoint="chat", model="", pool="", status="429").inc(300)
    gateway.in_flight.labels("gemma-4-31b").set(7)
    reading = source.read()
    assert reading is not None and reading.complete
    assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(60 / 30)
    assert reading.demand["gemma-4-31B"].requests_per_s == pytest.approx(9 / 30)
    assert reading.demand["gemma-4-E4B"].requests_per_s == 0.0
    assert reading.running()["gemma-4-31b"] == 7
    # No token counts anywhere: the assumed lengths stand in.
    assert reading.demand["gemma-4-31B"].mean_prompt_tokens == source.assumed_prompt_tokens


def test_engine_counters_give_mean_lengths_and_running_requests(
    serve_registry: Any, fleet: FleetSpec
) -> None:
    engines = [SimulatorMetrics("gemma-4-26b-a4b", 131072, i) for i in range(2)]
    urls = [serve_registry(e.registry) for e in engines]
    clock = Clock()
    source = MetricsSource(urls, fleet, clock=clock)
    assert source.read() is None
    clock.t += 20
    for engine, finished in zip(engines, (10, 30), strict=True):
        engine.success["stop"].inc(finished)
        engine.prompt_tokens.inc(finished * 2000)
        engine.generation_tokens.inc(finished * 100)
        engine.running.set(finished // 10)
        engine.waiting.set(1)
    reading = source.read()
    assert reading is not None
    demand = reading.demand["gemma-4-26B-A4B"]
    assert demand.requests_per_s == pytest.approx(40 / 20)  # no gateway: engine completions
    assert demand.mean_prompt_tokens == pytest.approx(2000)
    assert demand.mean_output_tokens == pytest.approx(100)
    assert reading.running()["gemma-4-26b-a4b"] == 1 + 1 + 3 + 1  # running + waiting, both
    # A quiet window keeps the last measured lengths rather than reverting to assumptions.
    clock.t += 20
    quiet = source.read()
    assert quiet is not None
    assert quiet.demand["gemma-4-26B-A4B"].requests_per_s == 0.0
    assert quiet.demand["gemma-4-26B-A4B"].mean_prompt_tokens == pytest.approx(2000)


def test_gateway_token_counters_give_lengths_without_engine_metrics(
    serve_registry: Any, fleet: FleetSpec
) -> None:
    gateway = GatewayMetrics()
    source = MetricsSource([serve_registry(gateway.registry)], fleet, clock=(clock := Clock()))
    source.read()
    clock.t += 10
    labelled(gateway.requests, endpoint="chat", pool="gemma-4-e4b", status="200").inc(4)
    labelled(gateway.tokens, model="gemma-4-E4B", kind="prompt").inc(4 * 300)
    labelled(gateway.tokens, model="gemma-4-E4B", kind="completion").inc(4 * 50)
    reading = source.read()
    assert reading is not None
    assert reading.demand["gemma-4-E4B"].mean_prompt_tokens == pytest.approx(300)
    assert reading.demand["gemma-4-E4B"].mean_output_tokens == pytest.approx(50)


def test_a_restarted_gateway_counts_from_zero_not_negative(fleet: FleetSpec) -> None:
    texts = iter(
        [
            'gemma_fleet_gateway_requests_total{pool="gemma-4-e2b",status="200"} 900\n',
            'gemma_fleet_gateway_requests_total{pool="gemma-4-e2b",status="200"} 12\n',
        ]
    )
    clock = Clock()
    source = MetricsSource(["http://gw/metrics"], fleet, fetch=lambda url: next(texts), clock=clock)
    source.read()
    clock.t += 12
    reading = source.read()
    assert reading is not None
    assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(1.0)


def test_unreachable_endpoint_marks_the_reading_incomplete(
    serve_registry: Any, fleet: FleetSpec
) -> None:
    gateway = GatewayMetrics()
    good = serve_registry(gateway.registry)
    dead = "http://127.0.0.1:9/metrics"  # discard port: nothing listens
    clock = Clock()
    source = MetricsSource([good, dead], fleet, clock=clock)
    source.read()
    clock.t += 30
    labelled(gateway.requests, endpoint="chat", pool="gemma-4-e2b", status="200").inc(30)
    reading = source.read()
    assert reading is not None
    assert not reading.complete
    assert any("127.0.0.1:9" in e for e in reading.errors)
    assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(1.0)


def test_pools_not_in_the_fleet_are_reported_not_counted(fleet: FleetSpec) -> None:
    texts = iter(
        [
            'gemma_fleet_gateway_requests_total{pool="old-pool",status="200"} 0\n',
            'gemma_fleet_gateway_requests_total{pool="old-pool",status="200"} 50\n',
        ]
    )
    clock = Clock()
    source = MetricsSource(["http://gw/metrics"], fleet, fetch=lambda url: next(texts), clock=clock)
    source.read()
    clock.t += 10
    reading = source.read()
    assert reading is not None
    assert reading.unknown_pools == ("old-pool",)
    assert sum(d.requests_per_s for d in reading.demand.values()) == 0.0


def test_garbage_is_an_error_not_a_crash(fleet: FleetSpec) -> None:
    # An error the step reports (and the status server counts as failed), not "waiting for a
    # second scrape", which is what an unreadable endpoint used to look like.
    clock = Clock()
    source = MetricsSource(
        ["http://gw/metrics"], fleet, fetch=lambda url: "{not prometheus", clock=clock
    )
    for _ in range(2):
        with pytest.raises(MetricsError, match="no metrics URL answered: http://gw/metrics"):
            source.read()
        clock.t += 10


def test_no_url_answering_fails_the_read_and_names_each_url(fleet: FleetSpec) -> None:
    source = MetricsSource(
        ["http://127.0.0.1:9/metrics", "http://127.0.0.1:9/other"], fleet, clock=Clock()
    )
    with pytest.raises(MetricsError) as caught:
        source.read()
    assert "127.0.0.1:9/metrics" in str(caught.value) and "127.0.0.1:9/other" in str(caught.value)


def test_an_answer_without_known_series_is_an_error_naming_the_likely_cause(
    fleet: FleetSpec,
) -> None:
    # Ray's metrics port exports the gateway's counters with a ray_ prefix: 200, but nothing
    # this reader knows. Read as "no demand" it would never scale up.
    ray_port = 'ray_gemma_fleet_gateway_requests_total{pool="gemma-4-e2b",status="200"} 5\n'
    source = MetricsSource(["http://head:8080/metrics"], fleet, fetch=lambda url: ray_port)
    with pytest.raises(MetricsError, match=r"no gateway or vLLM series.*ray_ prefix"):
        source.read()
    # Beside a URL that answers, it makes the reading incomplete, named.
    good = iter(
        [
            'gemma_fleet_gateway_requests_total{pool="gemma-4-e2b",status="200"} 0\n',
            'gemma_fleet_gateway_requests_total{pool="gemma-4-e2b",status="200"} 20\n',
        ]
    )
    clock = Clock()
    source = MetricsSource(
        ["http://gw/metrics", "http://head:8080/metrics"],
        fleet,
        fetch=lambda url: next(good) if url == "http://gw/metrics" else ray_port,
        clock=clock,
    )
    source.read()
    clock.t += 10
    reading = source.read()
    assert reading is not None and not reading.complete
    assert any("head:8080" in e and "ray_ prefix" in e for e in reading.errors)
    assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(2.0)


def test_an_empty_answer_between_two_good_ones_is_no_spike(fleet: FleetSpec) -> None:
    # An engine that answered 200 with nothing once: its counters must not be taken as having
    # started from zero in the next interval (5,000 finished requests at once).
    texts = iter(
        [
            'vllm:request_success_total{model_name="gemma-4-e2b",finished_reason="stop"} 5000\n',
            "",
            'vllm:request_success_total{model_name="gemma-4-e2b",finished_reason="stop"} 5020\n',
        ]
    )
    clock = Clock()
    source = MetricsSource(
        ["http://engine/metrics"], fleet, fetch=lambda url: next(texts), clock=clock
    )
    assert source.read() is None
    clock.t += 10
    with pytest.raises(MetricsError, match="no gateway or vLLM series"):
        source.read()
    clock.t += 10
    reading = source.read()
    assert reading is not None
    assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(20 / 20)


class BalancedGateway:
    """Gateway replicas behind one URL, as the serve Service puts them: each scrape is
    answered by the replica `order` names next, with that replica's own counters only."""

    def __init__(self, replicas: int) -> None:
        self.replicas = [GatewayMetrics() for _ in range(replicas)]
        for replica in self.replicas:
            replica.gateway_replicas.set(replicas)
        self.order: list[int] = []

    def serve(self, replica: int, requests: float) -> None:
        counter = labelled(self.replicas[replica].requests, pool="gemma-4-e2b", status="200")
        counter.inc(requests)

    def fetch(self, url: str) -> str:
        return self.replicas[self.order.pop(0)].render().decode()


def test_replicas_behind_one_url_are_each_differenced_and_summed(fleet: FleetSpec) -> None:
    gateway = BalancedGateway(2)
    # Replica 1 has not read the Serve controller yet: the count replica 0 gave stands.
    gateway.replicas[1].gateway_replicas.set(-1)
    # The balancer's picks over eight scrapes: replica 1 answers twice only at the 5th.
    gateway.order = [0, 0, 1, 0, 1, 1, 0, 0]
    clock = Clock()
    source = MetricsSource(["http://gw/metrics"], fleet, fetch=gateway.fetch, clock=clock)
    seen = []
    for _ in range(8):
        reading = source.read()
        seen.append(None if reading is None else reading)
        clock.t += 30
        gateway.serve(0, 3 * 30)  # 3 req/s through replica 0
        gateway.serve(1, 5 * 30)  # 5 req/s through replica 1
    assert seen[0] is None  # one scrape of one replica: nothing to difference
    partial = seen[1]
    assert partial is not None and not partial.complete
    assert "rates from 1 of 2 gateway replicas" in partial.errors[0]
    assert partial.demand["gemma-4-E2B"].requests_per_s == pytest.approx(3.0)
    for reading in seen[4:]:  # both replicas differenced against themselves
        assert reading is not None and reading.complete
        assert reading.demand["gemma-4-E2B"].requests_per_s == pytest.approx(8.0)


def test_a_replaced_gateway_replica_is_not_counted_beside_its_successor(
    fleet: FleetSpec,
) -> None:
    gateway = BalancedGateway(1)
    gateway.order = [0, 0]
    clock = Clock()
    source = MetricsSource(["http://gw/metrics"], fleet, fetch=gateway.fetch, clock=clock)
    source.read()
    clock.t += 30
    gateway.serve(0, 4 * 30)
    before = source.read()
    assert before is not None and before.demand["gemma-4-E2B"].requests_per_s == 4.0
    successor = BalancedGateway(1)  # a new process: new identity, counters from zero
    gateway.replicas.append(successor.replicas[0])
    gateway.order = [1, 1]
    clock.t += 30
    assert source.read() is None  # the successor has no rate yet; the old one is not used
    clock.t += 30
    gateway.serve(1, 2 * 30)
    after = source.read()
    assert after is not None and after.complete
    assert after.demand["gemma-4-E2B"].requests_per_s == pytest.approx(2.0)


def test_a_replica_not_heard_from_for_long_is_dropped(fleet: FleetSpec) -> None:
    gateway = BalancedGateway(2)
    gateway.order = [0, 1, 0, 1] + [0] * 12
    clock = Clock()
    source = MetricsSource(
        ["http://gw/metrics"], fleet, fetch=gateway.fetch, clock=clock, replica_stale_s=300
    )
    readings = []
    for _ in range(16):
        readings.append(source.read())
        clock.t += 30
        gateway.serve(0, 3 * 30)
        gateway.serve(1, 5 * 30)
    # Replica 1 was last heard from at the 4th scrape (t=190): its rate counts until 300 s
    # have passed, then the reading is incomplete and only replica 0's rate is left.
    fresh, stale = readings[6], readings[15]
    assert fresh is not None and fresh.complete
    assert fresh.demand["gemma-4-E2B"].requests_per_s == pytest.approx(8.0)
    assert stale is not None and not stale.complete
    assert stale.demand["gemma-4-E2B"].requests_per_s == pytest.approx(3.0)
