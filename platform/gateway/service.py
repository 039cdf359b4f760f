"""The gateway's core: classify, route, dispatch to the pool, shape the answer.

HTTP lives in app.py; this module knows requests and replies, not sockets, so it is tested
without a server. A call that fails before its first reply is tried once more (Ray Serve routes
the retry to a live replica); a failure after the stream started ends the stream with an error
event, never silence.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gemma_fleet.catalog import Modality
from gemma_fleet.catalog.schema import Family
from gemma_fleet.deployments.pools.schema import GatewayOptions, MediaOptions
from gemma_fleet.gateway.accounting import Usage, usage_of
from gemma_fleet.gateway.answer_size import (
    WholeLogprobsGate,
    check_whole_logprobs,
    whole_logprobs_share,
)
from gemma_fleet.gateway.classify import (
    Classification,
    InvalidMedia,
    check_image,
    classify_chat,
    completion_prompt_tokens,
    inline_media_chars,
)
from gemma_fleet.gateway.documents import PDF_CONTENT_TYPES, DocumentPart, PageCache, read_pdf
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.media_fetch import (
    FetchPolicy,
    MediaFetchError,
    Resolver,
    data_url,
    fetch,
    system_resolver,
)
from gemma_fleet.gateway.metrics import GatewayMetrics
from gemma_fleet.gateway.openai_models import (
    ChatCompletionRequest,
    CompletionRequest,
    ContentPart,
    FilePart,
    ImagePart,
    Message,
    TextPart,
    UserMessage,
    VideoPart,
)
from gemma_fleet.gateway.pdf_process import PdfReader, PdfReaders
from gemma_fleet.gateway.pool_client import (
    EngineError,
    JsonReply,
    Method,
    PoolClient,
    PoolUnavailable,
    Reply,
    SseReply,
    opening_error,
)
from gemma_fleet.gateway.pool_state import PoolState
from gemma_fleet.routing import (
    PoolView,
    RequestNeeds,
    RouteDecision,
    RoutingError,
    permits,
    route,
)
from gemma_fleet.telemetry import (
    Span,
    current,
    end_span,
    end_with,
    mark_failed,
    names,
    span,
    start_span,
)

log = logging.getLogger(__name__)

# `created` of every model card (OpenAI's Model requires one): a fixed 2026-01-01T00:00:00Z.
# Not a release date (the catalog records none) and not the fleet's start time, which would
# differ between gateway replicas behind one address and change on every restart; a fixed
# value keeps /v1/models the same whichever replica answers, for clients that cache it.
MODEL_CREATED = 1_767_225_600

# What of a chat request decides its prompt, as vLLM's chat tokenize request takes it.
TOKENIZE_FIELDS = (
    "messages",
    "tools",
    "add_generation_prompt",
    "continue_final_message",
    "chat_template_kwargs",
)

POOL_HEADER = "x-gemma-fleet-pool"
REASON_HEADER = "x-gemma-fleet-route"
DONE = "data: [DONE]\n\n"


class PoolInfo(BaseModel):
    """What the gateway is told about a pool when it starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    max_model_len: int = Field(ge=1)
    modalities: list[Modality]
    capacity: int = Field(ge=1, description="replicas x max_num_seqs")
    max_num_seqs: int | None = Field(
        None, ge=1, description="sequences one replica runs at once; None: not checked"
    )
    size_rank: float = Field(description="smaller is cheaper to serve")


class GatewaySettings(GatewayOptions):
    """Everything the gateway runs on: what an operator sets in the fleet file's `gateway:`
    section (GatewayOptions), and the pools it routes to and their aliases, which the rest of
    the fleet file decides (gateway/fleet.py)."""

    pools: list[PoolInfo] = Field(min_length=1)
    aliases: dict[str, list[str]] = Field(default_factory=dict)

    def served_names(self) -> frozenset[str]:
        """Every name a request (or a team's allow-list) can use: pools, their catalog
        models, aliases."""
        return frozenset(
            {p.name for p in self.pools} | {p.model for p in self.pools} | set(self.aliases)
        )


def fetch_policy(media: MediaOptions) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=media.max_bytes,
        timeout_s=media.timeout_s,
        max_redirects=media.max_redirects,
        allowed_networks=tuple(ipaddress.ip_network(n) for n in media.allowed_networks),
    )


# A part whose media is fetched: the part, its URL, the media type it must be, its name.
RemoteMedia = tuple[ImagePart | VideoPart, str, str, str]


@dataclass
class JsonAnswer:
    reply: JsonReply
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        return self.reply.body

    @property
    def usage(self) -> Usage | None:
        """The answer's token counts: as the pool server sent them beside the body, else (an
        HTTP pool's answer) from the body."""
        if self.reply.usage is not None:
            return usage_of({"usage": self.reply.usage})
        return usage_of(self.body)


@dataclass
class StreamAnswer:
    events: AsyncIterator[str]
    headers: dict[str, str] = field(default_factory=dict)
    sequences: int = 1  # the choices (n) decoded side by side, whose tokens the usage sums


Answer = JsonAnswer | StreamAnswer


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as serving goes: the models their team may use (None: any); the
    team's quota admission, awaited once a request is known to be servable (so a request
    that is refused for its content never spends quota); and a check that takes nothing,
    awaited before work that a refusal would waste (fetching and reading a PDF). Both raise
    ApiError (429)."""

    allowed_models: frozenset[str] | None = None
    admit: Callable[[Classification], Awaitable[None]] | None = None
    check: Callable[[], Awaitable[None]] | None = None


ANYONE = Caller()

# Reads running replicas per deployment of the application from the cluster (blocking; run
# off the event loop): each pool's, and the gateway's own under `own_deployment`.
ReplicaCounts = Callable[[], Mapping[str, int | None]]
WATCH_INTERVAL_S = 1.5
# Inline media over this many base64 characters (a fetched image over this many bytes) is
# decoded and checked in a worker thread: a 15 MB PNG takes tens of ms
# (benchmarks/gateway_media_stall), against the thread hop's tens of microseconds, which small
# media would pay for nothing.
OFFLOAD_MEDIA_CHARS = 256 * 1024


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        client: PoolClient,
        facts: Family,
        *,
        resolve: Resolver = system_resolver,
        live_replicas: ReplicaCounts | None = None,
        own_deployment: str | None = None,
        watch_interval_s: float = WATCH_INTERVAL_S,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self._live_replicas = live_replicas
        self._own_deployment = own_deployment
        self._gateway_replicas: int | None = None  # the own deployment's, as last read
        self._whole_logprobs = WholeLogprobsGate()
        self._watch_interval_s = watch_interval_s
        self._watcher: asyncio.Task[None] | None = None
        self._client = client
        self._facts = facts
        self._fetch_policy = fetch_policy(settings.media)
        self._pdf_pages = PageCache()
        self.metrics = metrics or GatewayMetrics()
        stops = self.metrics.document_reader_stops
        self._pdf_readers = PdfReaders(
            [
                PdfReader(
                    settings.pdf_read_timeout_s,
                    settings.pdf_reader_memory_mib,
                    on_stop=lambda reason: stops.labels(reason).inc(),
                )
                for _ in range(settings.pdf_readers)
            ]
        )
        if live_replicas is not None and own_deployment is not None:
            self.metrics.gateway_replicas.set(-1)  # unknown until the watcher has read it
        self._resolve = resolve
        self.state = PoolState()
        for info in settings.pools:
            view = PoolView(
                name=info.name,
                model=info.model,
                max_model_len=info.max_model_len,
                modalities=frozenset(info.modalities),
                size_rank=info.size_rank,
                max_num_seqs=info.max_num_seqs,
            )
            self.state.add(view, info.capacity)

    def models(self, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        """OpenAI's model list: every pool and alias, with what it can take. With a team's
        `allowed` models, only what the team may call, and an alias with the pools it may
        reach through it (the ones routing would choose among)."""
        data = []
        for info in self.settings.pools:
            if allowed is None or permits(allowed, info.name, info.name, info.model):
                data.append(_model_card(info.name, [info]))
        for alias, members in self.settings.aliases.items():
            pools = [
                p
                for p in self.settings.pools
                if (p.name in members or p.model in members)
                and (allowed is None or permits(allowed, alias, p.name, p.model))
            ]
            if pools:
                data.append(_model_card(alias, pools))
        return {"object": "list", "data": data}

    def model(self, name: str, allowed: frozenset[str] | None = None) -> dict[str, Any]:
        """One card of `models()` (OpenAI's models.retrieve); 404 for a name not served (to
        the team, with `allowed`)."""
        for card in self.models(allowed)["data"]:
            if card["id"] == name:
                return dict(card)
        raise ApiError(404, f"model {name!r} does not exist", param="model", code="model_not_found")

    def metrics_text(self) -> bytes:
        """Prometheus exposition, with in-flight counts read from the pool state now."""
        # A replica scraped before it served anything must still learn how many run.
        self._ensure_watcher()
        self._set_pool_gauges()
        return self.metrics.render()

    def _set_pool_gauges(self) -> None:
        # On each scrape of /metrics, and on each watch: Ray's mirror of the metrics is
        # exported on Ray's schedule, not when someone reads /metrics.
        for name, pool in self.state.pools.items():
            self.metrics.in_flight.labels(name).set(pool.in_flight)
            live = pool.live_replicas
            self.metrics.live_replicas.labels(name).set(-1 if live is None else live)

    async def aclose(self) -> None:
        """Stop what this gateway started beside its requests (the PDF readers' processes)."""
        await self._pdf_readers.aclose()

    def ready(self) -> bool:
        return any(v.healthy for v in self.state.views())

    async def chat(self, request: ChatCompletionRequest, caller: Caller = ANYONE) -> Answer:
        documents = _has_documents(request)
        if caller.check is not None and documents:
            # A PDF decides the route and the tokens, so it is read before admission; a team
            # already over its limits must not make this replica fetch and read it first.
            with span(names.QUOTA):
                await caller.check()
        await self._read_documents(request)
        classified = await self._classify(request)
        needs = classified.needs
        whole = 0
        if request.logprobs:
            per_token = 1 + (request.top_logprobs or 0)
            tokens = request.n * needs.max_output_tokens
            whole = check_whole_logprobs(
                tokens, per_token, stream=request.stream, param="top_logprobs"
            )
        decision = self._route(needs, request.model, caller, documents=documents)
        if caller.admit is not None:
            with span(names.QUOTA):
                await caller.admit(classified)
        # Only a request some pool can serve is worth fetching media for.
        await self._inline_remote_media(request)
        payload = request.model_dump(exclude_none=True, by_alias=True)
        if request.output_limit is None:
            payload["max_tokens"] = needs.max_output_tokens
        _ask_for_usage(payload)
        return await self._dispatch(
            decision, needs, request.model, caller, "chat", payload, whole_logprobs=whole
        )

    async def completions(self, request: CompletionRequest, caller: Caller = ANYONE) -> Answer:
        """A completion of one prompt or a batch of them (served by one pool, as vLLM serves
        a batch: each prompt's n choices in turn, usage summed over them)."""
        prompts = completion_prompt_tokens(request)  # token ids: counted exactly
        needs = RequestNeeds(
            prompt_tokens=max(prompts),  # each prompt must fit the context on its own
            # OpenAI's default for completions is 16; echo-only still generates one token
            max_output_tokens=16 if request.max_tokens is None else max(request.max_tokens, 1),
            sequences=len(prompts) * request.n,
            prompts=len(prompts),
            batch_prompt_tokens=sum(prompts) if len(prompts) > 1 else None,
        )
        whole = 0
        if request.logprobs is not None:
            generated = 0 if request.echo_only else needs.max_output_tokens
            echoed = sum(prompts) if request.echo else 0
            tokens = request.n * (len(prompts) * generated + echoed)
            whole = check_whole_logprobs(
                tokens, 1 + request.logprobs, stream=request.stream, param="logprobs"
            )
        decision = self._route(needs, request.model, caller)
        if caller.admit is not None:
            with span(names.QUOTA):
                await caller.admit(Classification(needs, images=0, audio_seconds=0.0, videos=0))
        payload = request.model_dump(exclude_none=True)
        payload["max_tokens"] = 0 if request.echo_only else needs.max_output_tokens
        _ask_for_usage(payload)
        return await self._dispatch(
            decision, needs, request.model, caller, "completions", payload, whole_logprobs=whole
        )

    async def count_tokens(self, request: ChatCompletionRequest, caller: Caller = ANYONE) -> int:
        """The prompt tokens `request` comes to, counted by the engine of the pool that would
        serve it: its chat template, tokenizer and media processing, the same rendering a
        generation's usage.prompt_tokens counts. Routed like a generation (model, team policy,
        capability, health) but not admitted: it takes no quota and no batch slot."""
        documents = _has_documents(request)
        await self._read_documents(request)
        classified = await self._classify(request)
        needs = replace(classified.needs, max_output_tokens=1)  # nothing is generated
        decision = self._route(needs, request.model, caller, documents=documents)
        await self._inline_remote_media(request)  # the engine counts the media it would see
        chat = request.model_dump(exclude_none=True, by_alias=True)
        payload = {key: chat[key] for key in TOKENIZE_FIELDS if key in chat}
        answer = await self._dispatch(decision, needs, request.model, caller, "tokenize", payload)
        if not isinstance(answer, JsonAnswer) or not isinstance(answer.body.get("count"), int):
            raise ApiError(502, f"pool {decision.pool} answered the token count without one")
        return int(answer.body["count"])

    async def _read_documents(self, request: ChatCompletionRequest) -> None:
        """Replace each PDF (`file` part) by its pages' text and pictures, so that the request
        is classified, routed and metered on what the engine will read."""
        for i, message in enumerate(request.messages):
            parts = _parts_with_documents(message)
            if parts is None:
                continue
            named: list[tuple[ContentPart, str]] = []
            for j, part in enumerate(parts):
                name = request.part_name(i, j)
                if isinstance(part, FilePart):
                    named += [(page, name) for page in await self._read_document(part, name)]
                else:
                    named.append((part, name))
            request.replace_parts(i, named)

    async def _read_document(self, part: FilePart, where: str) -> list[DocumentPart]:
        pdf: bytes | str | None = part.file.file_data
        if pdf is None:  # FileData holds file_data or file_url
            assert part.file.file_url is not None
            pdf = await self._fetch_pdf(part.file.file_url, where)
        with span(names.DOCUMENT_READ) as traced:
            started = time.monotonic()
            try:
                pages, source = await read_pdf(pdf, where, self._pdf_pages, self._pdf_readers)
            except InvalidMedia as exc:
                self.metrics.document_read.labels("read").observe(time.monotonic() - started)
                raise ApiError(400, str(exc), param=where) from exc
            self.metrics.document_read.labels(source).observe(time.monotonic() - started)
            count = sum(p.type == "image_url" for p in pages)
            traced.set_attributes({names.DOCUMENT_PAGES: count, names.DOCUMENT_SOURCE: source})
            self.metrics.document_pages.labels(source).inc(count)
        if part.file.filename is None:
            return pages
        # The name a user may refer to ("summarise report.pdf") goes with its pages.
        name = part.file.filename.replace('"', "'")
        head = TextPart(type="text", text=f'<document name="{name}">\n')
        return [head, *pages, TextPart(type="text", text="</document>\n")]

    async def _fetch_pdf(self, url: str, where: str) -> bytes:
        """A PDF by URL, fetched under the same SSRF policy and limits as media."""
        with span(names.MEDIA_FETCH, attributes={names.MEDIA_ITEMS: 1}):
            body, _ = await self._fetch(url, PDF_CONTENT_TYPES, where)
        return body

    async def _fetch(self, url: str, accept: tuple[str, ...], where: str) -> tuple[bytes, str]:
        """`url`'s body and content type, fetched under the media policy; a refusal is a 400
        that begins with the part's place (`where`)."""
        try:
            return await fetch(url, self._fetch_policy, accept=accept, resolve=self._resolve)
        except MediaFetchError as exc:
            raise ApiError(400, f"{where}: {exc}", param=where) from exc

    async def _classify(self, request: ChatCompletionRequest) -> Classification:
        """classify_chat, in a worker thread when the request carries much inline media:
        decoding and checking it takes milliseconds a megabyte, a stall of every stream this
        replica serves if it ran on the event loop."""
        try:
            if inline_media_chars(request) > OFFLOAD_MEDIA_CHARS:
                return await asyncio.to_thread(classify_chat, request, self._facts)
            return classify_chat(request, self._facts)
        except InvalidMedia as exc:
            raise ApiError(400, str(exc), param="messages") from exc

    def _ensure_watcher(self) -> None:
        """Start the pool-health watcher on the serving event loop, once (lazily: the loop
        that serves requests is the one whose tasks it may cancel)."""
        if self._live_replicas is not None and self._watcher is None:
            self._watcher = asyncio.create_task(self.watch_pools())

    async def watch_pools(self) -> None:
        """Level-triggered pool health: every interval, read each pool's running replicas
        (off the event loop: it is a call to the cluster) and mark pools with none down until
        one runs again. Without this a request sent to a pool whose replicas all died, or
        that was scaled to zero, waits in Ray Serve's queue until a replica appears."""
        assert self._live_replicas is not None
        while True:
            try:
                counts = await asyncio.to_thread(self._live_replicas)
            except Exception:  # the cluster did not answer: keep what we knew
                log.warning("reading the pools' replica counts failed", exc_info=True)
            else:
                if self._own_deployment is not None:
                    own = counts.get(self._own_deployment)
                    self._gateway_replicas = own
                    self.metrics.gateway_replicas.set(-1 if own is None else own)
                for pool in self.state.set_live_replicas(counts):
                    log.warning("pool %s has no running replica: routed around", pool)
                    self.metrics.pool_outages.labels(pool).inc()
            self._set_pool_gauges()
            await asyncio.sleep(self._watch_interval_s)

    async def _inline_remote_media(self, request: ChatCompletionRequest) -> None:
        """Fetch http(s) media under the SSRF policy and pass it on as data: URLs, so no
        engine ever fetches a URL a client chose."""
        targets: list[RemoteMedia] = []
        for i, message in enumerate(request.messages):
            if isinstance(message, UserMessage) and isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if isinstance(part, ImagePart):
                        url, kind = part.image_url.url, "image/"
                    elif isinstance(part, VideoPart):
                        url, kind = part.video_url.url, "video/"
                    else:
                        continue
                    targets.append((part, url, kind, request.part_name(i, j)))
        remote = [t for t in targets if t[1].startswith(("http://", "https://"))]
        if not remote:
            return
        with span(names.MEDIA_FETCH, attributes={names.MEDIA_ITEMS: len(remote)}):
            await self._fetch_media(remote)

    async def _fetch_media(self, remote: list[RemoteMedia]) -> None:
        fetched = await asyncio.gather(
            *(self._fetch(url, (kind,), where) for _, url, kind, where in remote)
        )
        for (part, url, _, where), (body, content_type) in zip(remote, fetched, strict=True):
            if isinstance(part, ImagePart):
                try:
                    await _check_image(body, f"{where}: image at {url}")
                except InvalidMedia as exc:
                    raise ApiError(400, str(exc), param=where) from exc
                part.image_url.url = data_url(body, content_type)
            else:
                part.video_url.url = data_url(body, content_type)

    def _route(
        self, needs: RequestNeeds, requested: str, caller: Caller, *, documents: bool = False
    ) -> RouteDecision:
        with span(names.ROUTE) as traced:
            if traced.is_recording():  # skip building attributes nobody records
                traced.set_attributes(
                    {
                        names.REQUEST_MODEL: requested,
                        names.PROMPT_TOKENS_ESTIMATE: needs.input_tokens,
                        names.MAX_OUTPUT_TOKENS: needs.max_output_tokens,
                    }
                )
            try:
                decision = route(
                    needs,
                    requested,
                    self.state.views(),
                    aliases=self.settings.aliases,
                    allowed_models=caller.allowed_models,
                )
            except RoutingError as exc:
                message = exc.message
                if documents and Modality.IMAGE in exc.missing:
                    # The caller sent a PDF, not an image: say where the image comes from.
                    message += "; a PDF's pages are read as pictures, which takes image input"
                raise ApiError(
                    exc.status, message, param=exc.param, retry_after_s=exc.retry_after_s
                ) from exc
            if traced.is_recording():
                traced.set_attributes(
                    {names.POOL: decision.pool, names.ROUTE_REASON: decision.reason}
                )
            return decision

    async def _dispatch(
        self,
        decision: RouteDecision,
        needs: RequestNeeds,
        requested: str,
        caller: Caller,
        method: Method,
        payload: dict[str, Any],
        *,
        whole_logprobs: int = 0,
    ) -> Answer:
        """Send to the routed pool. A pool that cannot be reached twice in a row is marked
        down and the request is routed again: another capable pool serves it, or, when none
        is left, the client gets 503 with Retry-After. A whole answer with `whole_logprobs`
        entries waits first for its turn at the pool (answer_size.WholeLogprobsGate).

        The gateway.dispatch span is current while the pool is called (the pool clients send
        it on as the engine's parent) and ends with the reply, or with the stream."""
        self._ensure_watcher()
        stream = bool(payload.get("stream"))
        traced = start_span(names.DISPATCH, attributes={names.STREAM: stream})
        attempts = 0
        try:
            with current(traced):
                for _ in range(len(self.state.pools)):
                    pool = decision.pool
                    payload["model"] = pool
                    headers = {POOL_HEADER: pool, REASON_HEADER: decision.reason}
                    traced.set_attribute(names.POOL, pool)
                    share = whole_logprobs_share(
                        self.state.live_replicas(pool), self._gateway_replicas
                    )
                    try:
                        async with self._whole_logprobs.hold(pool, whole_logprobs, share) as waited:
                            if waited:
                                self.metrics.whole_answer_waits.labels(pool).inc()
                                traced.set_attribute(names.DISPATCH_TURN_WAIT, waited)
                            replies, first, used = await self._first_reply(
                                pool,
                                method,
                                payload,
                                0 if method == "tokenize" else needs.sequences,
                            )
                    except PoolUnavailable:
                        attempts += 2
                        traced.set_attribute(names.DISPATCH_ATTEMPTS, attempts)
                        traced.add_event("pool_unavailable", {names.POOL: pool})
                        self.state.mark_down(pool)
                        decision = self._route(needs, requested, caller)
                        continue
                    attempts += used
                    traced.set_attribute(names.DISPATCH_ATTEMPTS, attempts)
                    if isinstance(first, SseReply):
                        first = opening_error(first) or first
                    if isinstance(first, EngineError):
                        await _close(replies)
                        raise _refusal(first)
                    if isinstance(first, JsonReply):
                        await _close(replies)
                        end_span(traced)
                        return JsonAnswer(first, headers)
                    events = self._stream(pool, first, replies, traced)
                    return StreamAnswer(end_with(traced, events), headers, needs.sequences)
            raise ApiError(
                503, "no capable pool could be reached; try again shortly", retry_after_s=5
            )
        except BaseException as exc:
            end_span(traced, exc)
            raise

    async def _first_reply(
        self, pool: str, method: Method, payload: dict[str, Any], sequences: int
    ) -> tuple[AsyncIterator[Reply], Reply, int]:
        """The call's replies, the first of them and how many calls it took; a call that fails
        before its first reply is tried once more (Ray Serve sends the retry to a live
        replica)."""
        for attempt in (1, 2):
            replies = self._tracked(pool, self._client.call(pool, method, payload), sequences)
            try:
                with self.state.awaiting_first_reply(pool):
                    return replies, await anext(replies), attempt
            except PoolUnavailable:
                await _close(replies)
                if attempt == 2 or self.state.live_replicas(pool) == 0:
                    raise
                self.metrics.pool_retries.labels(pool).inc()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self.state.cut_by_outage(task):
                    raise  # the client left
                # The pool lost its last replica while this request waited for one: route
                # it again (another pool, or 503) rather than wait for a restart.
                assert task is not None
                task.uncancel()
                await _close(replies)
                raise PoolUnavailable(f"pool {pool} has no running replica") from None
            except StopAsyncIteration as exc:
                raise ApiError(502, f"pool {pool} closed the response without a reply") from exc
        raise AssertionError("unreachable")

    async def _tracked(
        self, pool: str, replies: AsyncIterator[Reply], sequences: int
    ) -> AsyncIterator[Reply]:
        """Count the request (and its sequences) in flight for as long as its replies are
        being read."""
        with self.state.in_flight(pool, sequences):
            try:
                async for reply in replies:
                    yield reply
            finally:
                await _close(replies)

    async def _stream(
        self, pool: str, first: Reply, replies: AsyncIterator[Reply], traced: Span
    ) -> AsyncIterator[str]:
        done = False
        try:
            pending: Reply | None = first
            while pending is not None:
                if isinstance(pending, SseReply):
                    done = done or pending.text.rstrip().endswith("data: [DONE]")
                    yield pending.text
                elif isinstance(pending, EngineError):
                    mark_failed(traced, f"engine error {pending.status}: {pending.message}")
                    yield _refusal(pending).sse_event()
                elif isinstance(pending, JsonReply):
                    yield f"data: {pending.raw.decode()}\n\n"
                pending = await anext(replies, None)
        except Exception as exc:
            # The client gets an error event, not an exception: the span must say so itself.
            mark_failed(traced, f"pool {pool} failed mid-stream: {type(exc).__name__}", exc)
            self.metrics.streams_cut.labels(pool).inc()
            yield ApiError(503, f"pool {pool} failed mid-stream: {type(exc).__name__}").sse_event()
        finally:
            await _close(replies)
        if not done:
            yield DONE


def _refusal(error: EngineError) -> ApiError:
    """The engine's error as the client's, with the field it names (`param`) kept."""
    return ApiError(error.status, error.message, param=error.param)


def _ask_for_usage(payload: dict[str, Any]) -> None:
    """Streams always end with the engine's usage chunk: it is how a team's budget learns what
    the stream really cost. The HTTP layer drops it again for clients that did not ask."""
    if payload.get("stream"):
        payload["stream_options"] = {**payload.get("stream_options", {}), "include_usage": True}


def _parts_with_documents(message: Message) -> list[ContentPart] | None:
    """The parts of `message` if one of them is a PDF (a `file` part; only a user message
    takes one), else None."""
    if not isinstance(message, UserMessage) or isinstance(message.content, str):
        return None
    if any(isinstance(part, FilePart) for part in message.content):
        return message.content
    return None


def _has_documents(request: ChatCompletionRequest) -> bool:
    return any(_parts_with_documents(message) is not None for message in request.messages)


async def _close(replies: AsyncIterator[Reply]) -> None:
    aclose = getattr(replies, "aclose", None)
    if aclose is not None:
        await aclose()


def _model_card(name: str, pools: list[PoolInfo]) -> dict[str, Any]:
    modalities = sorted({m.value for p in pools for m in p.modalities})
    return {
        "id": name,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": "gemma-fleet",
        "pools": [p.name for p in pools],
        "modalities": modalities,
        "max_model_len": max(p.max_model_len for p in pools),
    }


async def _check_image(raw: bytes, what: str) -> None:
    """check_image, in a worker thread for a large image (see Gateway._classify)."""
    if len(raw) > OFFLOAD_MEDIA_CHARS:
        await asyncio.to_thread(check_image, raw, what)
    else:
        check_image(raw, what)
