"""Demand per model and running requests per pool, scraped from Prometheus text endpoints.

Two kinds of endpoint are understood, and a URL may carry either or both:

- the gateway's /metrics: `gemma_fleet_gateway_requests_total{...,pool,status}` (requests
  answered per pool; `pool` is the fleet file's model pool, which the fleet maps to a catalog
  model; other labels are summed over), `gemma_fleet_gateway_tokens_total{model,kind}` (tokens
  per catalog model, kind prompt or completion) and
  `gemma_fleet_gateway_in_flight_requests{pool}`;
- an engine's vLLM metrics (`model_name` is the pool, the served model id):
  `vllm:request_success_total`, `vllm:prompt_tokens_total`, `vllm:generation_tokens_total`,
  `vllm:num_requests_running`, `vllm:num_requests_waiting`.

Counters become rates between two scrapes of the same process, as Prometheus' rate() does: a
value lower than the last one is a counter reset (the process restarted) and counts from zero.
When any gateway series is present, request rates come from the gateway (it sees every request,
including ones an engine refused); engine success counters are the fallback. Mean prompt and
output lengths come from engine counters (tokens per finished request), else from the
gateway's token counters (per successful request), else the settings' assumed lengths.

Several processes may answer one URL: the gateway's replicas behind the serve Service, one per
scrape, each counting only what it served. The gateway names the replica each exposition comes
from (`gemma_fleet_gateway_replica_info{gateway_replica}`) and how many run
(`gemma_fleet_gateway_replicas`; a replica that has not read it yet says -1, and the last count
told stands). Each replica's counters are differenced against its own last scrape, and the URL's
rate is the sum of the latest rates of as many replicas as run, the ones heard from last: a
replaced replica drops out once its successor has answered, and one not heard from for
`replica_stale_s` is dropped in any case. Until rates from as many replicas as run are in, the
reading is incomplete: demand may be under-counted, so it may add capacity but not remove it. A
URL without these series (an engine, an older gateway) is one process.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gemma_fleet.autoscaler.plan import ModelDemand
from gemma_fleet.deployments.pools import FleetSpec

log = logging.getLogger(__name__)

GATEWAY_REQUESTS = "gemma_fleet_gateway_requests_total"
GATEWAY_TOKENS = "gemma_fleet_gateway_tokens_total"
GATEWAY_IN_FLIGHT = "gemma_fleet_gateway_in_flight_requests"
VLLM_SUCCESS = "vllm:request_success_total"
VLLM_PROMPT_TOKENS = "vllm:prompt_tokens_total"
VLLM_GENERATION_TOKENS = "vllm:generation_tokens_total"
VLLM_RUNNING = "vllm:num_requests_running"
VLLM_WAITING = "vllm:num_requests_waiting"
GATEWAY_REPLICA_INFO = "gemma_fleet_gateway_replica_info"
GATEWAY_REPLICAS = "gemma_fleet_gateway_replicas"
COUNTERS = (
    GATEWAY_REQUESTS,
    GATEWAY_TOKENS,
    VLLM_SUCCESS,
    VLLM_PROMPT_TOKENS,
    VLLM_GENERATION_TOKENS,
)
GAUGES = (GATEWAY_IN_FLIGHT, VLLM_RUNNING, VLLM_WAITING)

# One time series: sample name and its labels, sorted, so it can key a dict.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]
Fetch = Callable[[str], str]


class MetricsError(RuntimeError):
    """A metrics endpoint could not be read or parsed."""


def parse_samples(text: str) -> dict[SeriesKey, float]:
    """The samples this module reads from Prometheus text; other families are skipped."""
    # Imported here: the `gemma-fleet` command loads this module for every sub-command.
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {*COUNTERS, *GAUGES, GATEWAY_REPLICA_INFO, GATEWAY_REPLICAS}
    out: dict[SeriesKey, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise MetricsError(f"not Prometheus text: {exc}") from exc
    for family in families:
        for sample in family.samples:
            if sample.name in wanted:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def http_fetch(
    timeout_s: float = 5.0, token: str | None = None, token_file: Path | None = None
) -> Fetch:
    """A fetch function that GETs a URL and returns its body (MetricsError on failure).

    `token`: the gateway's GEMMA_FLEET_METRICS_TOKEN, sent as `Authorization: Bearer` only to
    a URL that has asked for it with a 401 (then on every scrape of that URL): an engine's or
    any other open endpoint among the URLs never sees it. Sent without the whitespace around
    it, as the gateway reads it (a Secret's trailing newline would make httpx refuse the
    header with an error that quotes it). `token_file`: instead of `token`, a file holding it,
    read again for every scrape that sends it, so a token rotated in a mounted Secret is
    taken up without a restart (the gateway follows its own copy the same way)."""
    option = "--metrics-token-file / GEMMA_FLEET_METRICS_TOKEN_FILE" if token_file else None
    fixed = token.strip() if token else None
    asked: set[str] = set()  # URLs that answered 401 without the token

    def credential() -> dict[str, str]:
        value = read_token_file(token_file) if token_file is not None else fixed
        return {"authorization": f"Bearer {value}"} if value else {}

    def fetch(url: str) -> str:
        import httpx

        try:
            headers = credential() if url in asked else {}
            response = httpx.get(url, timeout=timeout_s, headers=headers)
            if response.status_code == 401 and (fixed or token_file) and url not in asked:
                asked.add(url)
                response = httpx.get(url, timeout=timeout_s, headers=credential())
            if response.status_code == 401:
                raise MetricsError(f"GET {url}: 401: {unauthorized_hint(url in asked, option)}")
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise MetricsError(f"{url}: {exc}") from exc
        return response.text

    return fetch


def read_token_file(path: Path) -> str:
    """The token in `path`, without the whitespace around it; MetricsError naming the file when
    it cannot be read or is empty."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise MetricsError(f"the metrics token file {path}: {reason}") from None
    if not value:
        raise MetricsError(f"the metrics token file {path} is empty")
    return value


def unauthorized_hint(token_sent: bool, option: str | None = None) -> str:
    """What to do about a 401 from a gateway's /metrics: it wants the metrics token. `option`
    names where the token came from (default: --metrics-token)."""
    option = option or "--metrics-token / GEMMA_FLEET_METRICS_TOKEN"
    if token_sent:
        return f"the metrics token was refused: check {option}"
    return f"set {option} (the gateway's metrics token)"


@dataclass(frozen=True)
class PoolTraffic:
    """What one scrape round measured for one model pool; None: no source reported it."""

    requests_per_s: float | None = None
    ok_per_s: float | None = None  # gateway: answered with status 200
    completed_per_s: float | None = None  # engine-side finished requests
    prompt_tokens_per_s: float | None = None
    output_tokens_per_s: float | None = None
    running: float | None = None  # requests in the pool now (engine running + waiting)


@dataclass(frozen=True)
class DemandReading:
    """One scrape round turned into rates.

    `complete` is False when some URL failed or had no earlier scrape to difference against:
    demand may then be under-counted, which is safe for adding capacity but not for removing it.
    """

    at: float
    pools: Mapping[str, PoolTraffic]
    demand: Mapping[str, ModelDemand]
    complete: bool
    errors: tuple[str, ...] = ()
    unknown_pools: tuple[str, ...] = ()

    def running(self) -> dict[str, float]:
        """Running requests per pool, for the pools some source reported."""
        return {p: t.running for p, t in self.pools.items() if t.running is not None}


@dataclass
class _Scrape:
    at: float
    samples: dict[SeriesKey, float]


@dataclass
class _Process:
    """What one process behind a URL last showed: its last scrape, and the counter rates
    between its last two scrapes (None until it has been scraped twice)."""

    last: _Scrape
    rates: dict[SeriesKey, float] | None = None


def _process_of(samples: Mapping[SeriesKey, float]) -> tuple[str, int | None]:
    """(which process answered, how many processes answer the URL: None when the scrape does
    not say or its process does not know yet) from one scrape."""
    process, count = "", None
    for (name, labels), value in samples.items():
        if name == GATEWAY_REPLICA_INFO:
            process = dict(labels).get("gateway_replica", "")
        elif name == GATEWAY_REPLICAS and value >= 1:
            count = int(value)
    return process, count


def _unrecognised(url: str, text: str) -> str:
    """Why a scrape of `url` that answered `text` carries nothing this module reads."""
    if "ray_gemma_fleet_gateway_" in text or "ray_vllm" in text:
        hint = (
            "this is Ray's metrics port, whose names carry a ray_ prefix; give the gateway's "
            "own /metrics (the serve port)"
        )
    else:
        hint = "is it the gateway's /metrics or a vLLM engine's?"
    return f"{url}: no gateway or vLLM series in the answer ({hint})"


def _rates(previous: _Scrape, now: _Scrape) -> dict[SeriesKey, float]:
    """Counter increase per second from `previous` to `now` (a drop is a restart)."""
    dt = now.at - previous.at
    out = {}
    for key, value in now.samples.items():
        if key[0] not in COUNTERS:
            continue
        before = previous.samples.get(key, 0.0)
        # A drop is a restart: the counter began again at zero since the last scrape.
        out[key] = (value - before if value >= before else value) / dt
    return out


@dataclass
class MetricsSource:
    """Scrapes `urls` each `read()` and returns demand since the previous read."""

    urls: Sequence[str]
    fleet: FleetSpec
    assumed_prompt_tokens: float = 1000.0
    assumed_output_tokens: float = 250.0
    fetch: Fetch = field(default_factory=http_fetch)
    clock: Callable[[], float] = time.monotonic
    replica_stale_s: float = 300.0
    _processes: dict[str, dict[str, _Process]] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)  # processes per URL, last told
    _known_lengths: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ValueError("at least one metrics URL is needed")

    def read(self) -> DemandReading | None:
        """Scrape every URL; None while no URL has two scrapes to compute rates from.
        MetricsError when no URL answered with series this module reads."""
        now = self.clock()
        errors: list[str] = []
        rates: dict[SeriesKey, float] = defaultdict(float)
        gauges: dict[SeriesKey, float] = defaultdict(float)
        differenced = 0
        answered_urls = 0
        for url in self.urls:
            try:
                text = self.fetch(url)  # its errors name the URL
            except MetricsError as exc:
                errors.append(str(exc))
                continue
            try:
                samples = parse_samples(text)
            except MetricsError as exc:
                errors.append(f"{url}: {exc}")
                continue
            if not samples:
                # A wrong path or port answers 200 too. Not recorded: the next good scrape is
                # differenced against the last good one, not against nothing (which would
                # count every counter's whole value as one interval's increase).
                errors.append(_unrecognised(url, text))
                continue
            answered_urls += 1
            answered, told = _process_of(samples)
            running = self._running[url] = told or self._running.get(url, 1)
            # The `running` processes heard from last: a replaced replica drops out as soon
            # as its successor has answered, instead of being counted beside it.
            current = self._observe(url, answered, _Scrape(now, samples))[:running]
            with_rates = [p for p in current if p.rates is not None]
            for process in current:
                for key, value in process.last.samples.items():
                    if key[0] in GAUGES:
                        gauges[key] += value
            if not with_rates:
                errors.append(f"{url}: first scrape, no rate yet")
                continue
            differenced += 1
            for process in with_rates:
                for key, value in (process.rates or {}).items():
                    rates[key] += value
            if len(with_rates) < running:
                errors.append(
                    f"{url}: rates from {len(with_rates)} of {running} gateway replicas so far"
                )
        if answered_urls == 0:
            # Not "waiting": a fleet whose metrics cannot be read is not being scaled, and the
            # step must fail (and be counted) so that an alert says so.
            raise MetricsError("no metrics URL answered: " + "; ".join(errors))
        for message in errors:
            log.warning("metrics: %s", message)
        if differenced == 0:
            return None
        pools, unknown = self._pools(rates, gauges)
        return DemandReading(
            at=now,
            pools=pools,
            demand=self._demand(pools, rates),
            complete=not errors,
            errors=tuple(errors),
            unknown_pools=tuple(sorted(unknown)),
        )

    def _observe(self, url: str, name: str, scrape: _Scrape) -> list[_Process]:
        """Record `scrape` of `url` against the process `name` that answered it; return the
        processes behind `url` heard from within `replica_stale_s`, the latest first."""
        processes = self._processes.setdefault(url, {})
        now = scrape.at
        seen = processes.get(name)
        if seen is None:
            processes[name] = _Process(scrape)
        elif now > seen.last.at:
            processes[name] = _Process(scrape, _rates(seen.last, scrape))
        for gone in [n for n, p in processes.items() if now - p.last.at > self.replica_stale_s]:
            del processes[gone]
        return sorted(processes.values(), key=lambda p: p.last.at, reverse=True)

    def _pools(
        self, rates: Mapping[SeriesKey, float], gauges: Mapping[SeriesKey, float]
    ) -> tuple[dict[str, PoolTraffic], set[str]]:
        known = {p.name for p in self.fleet.model_pools}
        unknown: set[str] = set()

        def by_pool(values: Mapping[SeriesKey, float], name: str, label: str) -> dict[str, float]:
            out: dict[str, float] = defaultdict(float)
            for (sample, labels), value in values.items():
                pool = dict(labels).get(label, "")
                if sample != name or not pool:
                    continue  # refused requests carry no pool: nothing served them
                if pool not in known:
                    unknown.add(pool)
                    continue
                out[pool] += value
            return out

        gateway = by_pool(rates, GATEWAY_REQUESTS, "pool")
        ok_rates = {k: v for k, v in rates.items() if dict(k[1]).get("status") == "200"}
        ok = by_pool(ok_rates, GATEWAY_REQUESTS, "pool")
        gateway_seen = any(k[0] == GATEWAY_REQUESTS for k in rates)
        success = by_pool(rates, VLLM_SUCCESS, "model_name")
        prompt = by_pool(rates, VLLM_PROMPT_TOKENS, "model_name")
        output = by_pool(rates, VLLM_GENERATION_TOKENS, "model_name")
        engine_seen = any(k[0] == VLLM_SUCCESS for k in rates)
        in_flight = by_pool(gauges, GATEWAY_IN_FLIGHT, "pool")
        running = by_pool(gauges, VLLM_RUNNING, "model_name")
        waiting = by_pool(gauges, VLLM_WAITING, "model_name")
        in_flight_seen = any(k[0] == GATEWAY_IN_FLIGHT for k in gauges)
        running_seen = any(k[0] == VLLM_RUNNING for k in gauges)
        out = {}
        for pool in known:
            if gateway_seen:
                requests: float | None = gateway.get(pool, 0.0)
            elif engine_seen:
                requests = success.get(pool, 0.0)
            else:
                requests = None
            # The gateway counts requests on their way to an engine; the engine counts those it
            # holds. Either alone under-reports, so the larger is the safer drain reading.
            readings = []
            if in_flight_seen:
                readings.append(in_flight.get(pool, 0.0))
            if running_seen:
                readings.append(running.get(pool, 0.0) + waiting.get(pool, 0.0))
            out[pool] = PoolTraffic(
                requests_per_s=requests,
                ok_per_s=ok.get(pool, 0.0) if gateway_seen else None,
                completed_per_s=success.get(pool, 0.0) if engine_seen else None,
                prompt_tokens_per_s=prompt.get(pool, 0.0) if engine_seen else None,
                output_tokens_per_s=output.get(pool, 0.0) if engine_seen else None,
                running=max(readings) if readings else None,
            )
        return out, unknown

    def _demand(
        self, pools: Mapping[str, PoolTraffic], rates: Mapping[SeriesKey, float]
    ) -> dict[str, ModelDemand]:
        """Per catalog model: summed request rate of its pools, and mean lengths (engine
        counters, else gateway token counters; the last measured value, else the assumed one,
        when nothing finished in the window)."""
        grouped: dict[str, list[PoolTraffic]] = defaultdict(list)
        for pool in self.fleet.model_pools:
            grouped[pool.model].append(pools[pool.name])
        gateway_tokens: dict[tuple[str, str], float] = defaultdict(float)
        for (sample, labels), value in rates.items():
            if sample == GATEWAY_TOKENS:
                tags = dict(labels)
                gateway_tokens[(tags.get("model", ""), tags.get("kind", ""))] += value
        out = {}
        for model, traffic in grouped.items():
            requests = sum(t.requests_per_s or 0.0 for t in traffic)
            done = sum(t.completed_per_s or 0.0 for t in traffic)
            ok = sum(t.ok_per_s or 0.0 for t in traffic)
            prompt_rate = gateway_tokens.get((model, "prompt"))
            if done > 0:
                prompt = sum(t.prompt_tokens_per_s or 0.0 for t in traffic) / done
                output = sum(t.output_tokens_per_s or 0.0 for t in traffic) / done
                self._known_lengths[model] = (prompt, output)
            elif ok > 0 and prompt_rate is not None:
                output_rate = gateway_tokens.get((model, "completion"), 0.0)
                self._known_lengths[model] = (prompt_rate / ok, output_rate / ok)
            prompt, output = self._known_lengths.get(
                model, (self.assumed_prompt_tokens, self.assumed_output_tokens)
            )
            out[model] = ModelDemand(
                requests_per_s=requests, mean_prompt_tokens=prompt, mean_output_tokens=output
            )
        return out
