"""PDFs: read by the gateway into each page's text and a picture of the page, through the
official OpenAI SDK (chat `file` parts, Responses `input_file`), so that the request is routed
and metered on what the engine reads; bad PDFs are a 400 naming the part, and a PDF being read
holds up nobody else. (Anthropic's document blocks: test_anthropic_blocks.py.)"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import resource
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from gateway_harness import RunningGateway
from openai.types.chat import ChatCompletionContentPartParam, ChatCompletionMessageParam
from openai.types.chat.chat_completion_content_part_param import FileFile
from openai.types.responses import (
    ResponseInputContentParam,
    ResponseInputFileParam,
    ResponseInputTextParam,
)
from pdf_files import huge_image_pdf, locked_pdf, scanned_pdf, text_pdf
from PIL import Image

from gemma_fleet.gateway import pdf_render
from gemma_fleet.gateway.classify import InvalidMedia
from gemma_fleet.gateway.documents import DocumentPart, PageCache, page_parts, pdf_bytes
from gemma_fleet.gateway.openai_models import ImagePart, TextPart
from gemma_fleet.gateway.pdf_process import PdfReader, PdfReaders
from gemma_fleet.gateway.pdf_render import (
    MAX_PDF_PAGES,
    PAGE_LONG_SIDE_PX,
    UnreadablePdf,
    render_pages,
)

STOPS = "gemma_fleet_gateway_document_reader_stops"
# What the simulated E2B pool counts for an image: its soft tokens and their two boundaries.
IMAGE_TOKENS = 280 + 2
HARVEST = "Harvest of 2026\nApples: 41 tonnes\nPears: 12 tonnes"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _picture(part: ImagePart) -> Image.Image:
    header, _, data = part.image_url.url.partition(",")
    assert header == "data:image/jpeg;base64"
    return Image.open(io.BytesIO(base64.b64decode(data)))


# ---- reading a PDF ------------------------------------------------------------------------------


def pdf_parts(raw: bytes, what: str) -> list[DocumentPart]:
    """What the gateway makes of a PDF, read in this process (the gateway's child reads it
    the same way: test_pdf_process.py)."""
    return page_parts(render_pages(raw, what))


def test_each_page_is_its_text_then_its_picture_in_order() -> None:
    parts = pdf_parts(text_pdf([HARVEST, "Orchard map on the next page"]), "doc")
    kinds: list[type] = [TextPart, ImagePart, TextPart]
    assert [type(p) for p in parts] == kinds * 2
    assert isinstance(parts[0], TextPart) and isinstance(parts[3], TextPart)
    assert parts[0].text == '<page number="1">\n' + HARVEST + "\n"
    assert parts[3].text.startswith('<page number="2">\nOrchard map')
    assert isinstance(parts[1], ImagePart)
    picture = _picture(parts[1])
    # US Letter (612 x 792 points), its long side at PAGE_LONG_SIDE_PX (PDFium rounds up)
    assert picture.size == (math.ceil(612 * PAGE_LONG_SIDE_PX / 792), PAGE_LONG_SIDE_PX)
    # the page is drawn: dark text on white, not a blank picture
    assert picture.convert("L").getextrema() == (0, 255)


def test_a_scanned_page_has_no_text_but_its_picture() -> None:
    parts = pdf_parts(scanned_pdf(), "scan")
    assert isinstance(parts[0], TextPart) and parts[0].text == '<page number="1">\n\n'
    assert isinstance(parts[1], ImagePart)
    assert max(_picture(parts[1]).size) == PAGE_LONG_SIDE_PX


def test_a_page_drawing_a_huge_image_is_read_without_decoding_it_whole() -> None:
    """1.2 GB of pixels once decoded: PDFium decodes an image at the size the page draws it,
    so the reader's memory stays far below that (measured: benchmarks/gateway_pdf_read)."""
    raw = huge_image_pdf(20_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    parts = pdf_parts(raw, "poster")
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert isinstance(parts[1], ImagePart) and max(_picture(parts[1]).size) == PAGE_LONG_SIDE_PX
    assert grown_mib < 400, f"the process's peak memory grew by {grown_mib:.0f} MiB"


def test_a_hairline_page_still_renders() -> None:
    parts = pdf_parts(text_pdf(["x"], size=(2000, 1)), "strip")
    assert isinstance(parts[1], ImagePart)
    width, height = _picture(parts[1]).size
    assert width == PAGE_LONG_SIDE_PX and height >= 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"hello", "doc is not a PDF: no %PDF- header in its first 1,024 bytes"),
        (b"%PDF-1.4\n%%EOF\n", "doc is not a readable PDF: data format error"),
        (text_pdf(["."] * (MAX_PDF_PAGES + 1)), f"doc has 101 pages; at most {MAX_PDF_PAGES}"),
        (locked_pdf(), "doc is password-protected: send it unlocked"),
    ],
    ids=["not-a-pdf", "broken", "too-many-pages", "locked"],
)
def test_a_bad_pdf_is_named_with_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(UnreadablePdf) as err:
        pdf_parts(raw, "doc")
    assert str(err.value).startswith(message)


def test_text_beyond_the_limit_is_refused_at_the_page_that_passes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pdf_render, "MAX_DOCUMENT_TEXT_CHARS", 60)
    with pytest.raises(UnreadablePdf) as err:
        pdf_parts(text_pdf([HARVEST, HARVEST]), "doc")
    assert str(err.value) == "doc holds more than 60 characters of text (reached on page 2)"


@pytest.mark.parametrize(
    ("file_data", "message"),
    [
        ("data:text/plain;base64,aGk=", "the file is text/plain, and only PDFs"),
        ("data:application/pdf,%PDF-1.4", "a file's data URL must look like data:application/pdf"),
        ("not base64!", "the PDF's data is not valid base64"),
    ],
)
def test_file_data_that_is_not_a_pdf_is_named(file_data: str, message: str) -> None:
    with pytest.raises(InvalidMedia) as err:
        pdf_bytes(file_data, "messages[0].content[1]")
    assert str(err.value).startswith("messages[0].content[1]: " + message)


def test_file_data_is_a_data_url_or_bare_base64() -> None:
    raw = text_pdf([HARVEST])
    assert pdf_bytes("data:application/pdf;base64," + _b64(raw), "doc") == raw
    assert pdf_bytes(_b64(raw), "doc") == raw


# ---- through the API ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(gateway_server: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


def _with_pdf(raw: bytes, filename: str | None = None) -> list[ChatCompletionMessageParam]:
    file: FileFile = {"file_data": "data:application/pdf;base64," + _b64(raw)}
    if filename is not None:
        file["filename"] = filename
    content: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "How many tonnes of pears?"},
        {"type": "file", "file": file},
    ]
    return [{"role": "user", "content": content}]


def _prompt_tokens(client: openai.OpenAI, messages: list[ChatCompletionMessageParam]) -> int:
    answer = client.chat.completions.create(model="e2b", max_tokens=2, messages=messages)
    assert answer.usage is not None
    return answer.usage.prompt_tokens


def test_a_pdf_is_metered_as_its_pages_pictures_and_text(client: openai.OpenAI) -> None:
    question = _prompt_tokens(client, [{"role": "user", "content": "How many tonnes of pears?"}])
    one = _prompt_tokens(client, _with_pdf(text_pdf([HARVEST])))
    three = _prompt_tokens(client, _with_pdf(text_pdf([HARVEST] * 3)))
    assert one > question + IMAGE_TOKENS + len(HARVEST) // 4
    # each page more: a picture and its text
    assert three - one >= 2 * (IMAGE_TOKENS + len(HARVEST) // 4)
    named = _prompt_tokens(client, _with_pdf(text_pdf([HARVEST]), filename="harvest.pdf"))
    assert named > one  # the file's name goes with its pages


def test_pdfs_read_at_once_each_come_to_their_own_pages(client: openai.OpenAI) -> None:
    """PDFium reads one document at a time (documents.py); requests that arrive together
    still each get their own pages back."""
    pages = [1, 4, 2, 5, 3]
    with ThreadPoolExecutor(len(pages)) as pool:
        counts = list(
            pool.map(lambda n: _prompt_tokens(client, _with_pdf(text_pdf([HARVEST] * n))), pages)
        )
    by_pages = dict(zip(pages, counts, strict=True))
    per_page = by_pages[2] - by_pages[1]
    assert per_page > IMAGE_TOKENS
    for n in pages:
        assert by_pages[n] == by_pages[1] + (n - 1) * per_page


PAGES = "gemma_fleet_gateway_document_pages_total"
READS = "gemma_fleet_gateway_document_read_duration_seconds_count"


def _scrape(gateway_server: RunningGateway) -> dict[tuple[str, str], float]:
    """The document metrics' samples by (name, source), buckets left out."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(gateway_server.url + "/metrics", timeout=10).text
    return {
        (sample.name, sample.labels["source"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in (PAGES, READS)
    }


def _grown(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> Any:
    return {
        key: value - before.get(key, 0)
        for key, value in after.items()
        if value != before.get(key, 0)
    }


def _unique(pages: int) -> bytes:
    """A PDF no other test sends: the gateway keeps the pages of PDFs it has read."""
    return text_pdf([f"{HARVEST}\n{uuid.uuid4()}"] * pages)


def test_pages_read_and_reading_time_are_metered(
    client: openai.OpenAI, gateway_server: RunningGateway
) -> None:
    before = _scrape(gateway_server)
    _prompt_tokens(client, _with_pdf(_unique(3)))
    with pytest.raises(openai.BadRequestError):
        _prompt_tokens(client, _with_pdf(b"%PDF-1.4\n%%EOF\n"))
    # each PDF's reading took time; the broken one has no page read
    assert _grown(before, _scrape(gateway_server)) == {(PAGES, "read"): 3, (READS, "read"): 2}


def test_a_pdf_sent_again_is_not_read_again(
    client: openai.OpenAI, gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation about a document sends it with every question: the pages read the first
    time are used again, and the prompt is the same."""
    reads: list[str] = []
    readers = gateway_server.gateway._pdf_readers
    real = readers.read

    async def counted(raw: bytes, what: str) -> list[pdf_render.Page]:
        reads.append(what)
        return await real(raw, what)

    monkeypatch.setattr(readers, "read", counted)
    report = _unique(4)
    before = _scrape(gateway_server)
    first = _prompt_tokens(client, _with_pdf(report))
    again = _prompt_tokens(client, _with_pdf(report))
    _prompt_tokens(client, _with_pdf(_unique(4)))
    assert len(reads) == 2  # the report once, the other PDF once
    assert first == again
    assert _grown(before, _scrape(gateway_server)) == {
        (PAGES, "read"): 8,
        (READS, "read"): 2,
        (PAGES, "cache"): 4,
        (READS, "cache"): 1,
    }


def test_questions_sent_at_once_about_one_pdf_read_it_once(
    client: openai.OpenAI, gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client asking several questions about one document at once (an extraction
    pipeline) sends it with each: the replica reads it once for all of them, instead of
    queueing them for its reader, and each gets the same prompt."""
    reads: list[str] = []
    gateway = gateway_server.gateway
    readers, cache = gateway._pdf_readers, gateway._pdf_pages
    real = readers.read

    async def counted(raw: bytes, what: str) -> list[pdf_render.Page]:
        reads.append(what)
        # Held until all four wait for it, so that none comes late and finds it cached.
        deadline = time.monotonic() + 30
        while sum(r.waiters for r in cache._reading.values()) < 4:
            assert time.monotonic() < deadline, "the four requests never waited together"
            await asyncio.sleep(0.01)
        return await real(raw, what)

    monkeypatch.setattr(readers, "read", counted)
    report = _unique(3)
    before = _scrape(gateway_server)
    with ThreadPoolExecutor(4) as pool:
        prompts = list(pool.map(lambda _: _prompt_tokens(client, _with_pdf(report)), range(4)))
    assert len(reads) == 1
    assert len(set(prompts)) == 1
    assert _grown(before, _scrape(gateway_server)) == {
        (PAGES, "read"): 3,
        (READS, "read"): 1,
        (PAGES, "shared"): 9,
        (READS, "shared"): 3,
    }


def test_the_cache_keeps_the_most_recently_used_within_its_size() -> None:
    def parts(chars: int) -> list[DocumentPart]:
        return [TextPart(type="text", text="x" * chars)]

    cache = PageCache(max_chars=250)
    cache.put(b"a", parts(100))
    cache.put(b"b", parts(100))
    assert cache.get(b"a") is not None  # now the most recent
    cache.put(b"c", parts(100))  # 300 > 250: the least recently used goes
    assert cache.get(b"b") is None
    assert cache.get(b"a") is not None and cache.get(b"c") is not None
    cache.put(b"big", parts(300))  # larger than the whole cache: not kept, nothing dropped
    assert cache.get(b"big") is None and cache.get(b"a") is not None


# ---- one read for a PDF sent by several requests at once ----------------------------------------


PAGE_ONE: list[DocumentPart] = [TextPart(type="text", text="page one")]


class _SlowRead:
    """A read of one PDF that ends when the test sets `done`, counting its starts and
    whether it was stopped."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = False
        self.done = asyncio.Event()

    async def __call__(self) -> list[DocumentPart]:
        self.started += 1
        try:
            await self.done.wait()
        except asyncio.CancelledError:
            self.stopped = True
            raise
        return list(PAGE_ONE)


def test_requests_for_one_pdf_in_flight_share_its_read() -> None:
    async def main() -> None:
        cache, read = PageCache(), _SlowRead()
        first = asyncio.create_task(cache.shared(b"pdf", "messages[0].content[0]", read))
        second = asyncio.create_task(cache.shared(b"pdf", "messages[2].content[1]", read))
        await asyncio.sleep(0.01)
        read.done.set()
        assert await first == (PAGE_ONE, False)
        assert await second == (PAGE_ONE, True)
        assert read.started == 1

    asyncio.run(main())


def test_a_request_that_leaves_leaves_the_read_to_the_others() -> None:
    """A client that hangs up does not stop the read another request waits on; when the last
    one leaves, the read is stopped (its reader process with it: PdfReader's "abandoned")."""

    async def main() -> None:
        cache, read = PageCache(), _SlowRead()
        leaving = asyncio.create_task(cache.shared(b"pdf", "a", read))
        staying = asyncio.create_task(cache.shared(b"pdf", "b", read))
        await asyncio.sleep(0.01)
        leaving.cancel()
        await asyncio.sleep(0.01)
        assert not read.stopped
        read.done.set()
        assert (await staying)[0] == PAGE_ONE

        alone, read = PageCache(), _SlowRead()
        gone = [asyncio.create_task(alone.shared(b"pdf", "a", read)) for _ in range(2)]
        await asyncio.sleep(0.01)
        for task in gone:
            task.cancel()
        await asyncio.sleep(0.01)
        assert read.stopped
        again = _SlowRead()  # a request after they left starts a read of its own
        again.done.set()
        assert await alone.shared(b"pdf", "c", again) == (PAGE_ONE, False)

    asyncio.run(main())


def test_a_shared_read_that_fails_names_each_requests_own_part() -> None:
    async def main() -> None:
        cache = PageCache()
        gate = asyncio.Event()

        async def unreadable() -> list[DocumentPart]:
            await gate.wait()
            raise InvalidMedia("messages[0].content[0] is not a readable PDF: data format error")

        first = asyncio.create_task(cache.shared(b"pdf", "messages[0].content[0]", unreadable))
        second = asyncio.create_task(cache.shared(b"pdf", "input[3].content[1]", unreadable))
        await asyncio.sleep(0.01)
        gate.set()
        for task, where in ((first, "messages[0].content[0]"), (second, "input[3].content[1]")):
            with pytest.raises(InvalidMedia) as refused:
                await task
            assert str(refused.value) == f"{where} is not a readable PDF: data format error"
        # A failed read is not kept: the next request reads again (and is told again).
        read = _SlowRead()
        read.done.set()
        assert (await cache.shared(b"pdf", "x", read))[1] is False and read.started == 1

    asyncio.run(main())


def test_a_bad_pdf_is_a_400_naming_the_part(client: openai.OpenAI) -> None:
    broken: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Hi"},
        *_with_pdf(b"%PDF-1.4\n%%EOF\n"),
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="e2b", max_tokens=2, messages=broken)
    assert isinstance(err.value.body, dict)
    assert err.value.body["message"] == (
        "messages[1].content[1] is not a readable PDF: data format error"
    )
    assert err.value.body["param"] == "messages[1].content[1]"


def test_a_part_after_a_pdf_keeps_its_name(gateway_server: RunningGateway) -> None:
    """A PDF's pages take the place of one part; a bad image after it is still named where
    the caller put it, in OpenAI's request and in Anthropic's (whose system prompt is no
    message of its own)."""
    pdf = "data:application/pdf;base64," + _b64(text_pdf([HARVEST, HARVEST]))
    garbage = _b64(b"not an image")
    chat = [
        {"type": "file", "file": {"file_data": pdf}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + garbage}},
    ]
    blocks = [{"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                              "data": pdf.partition(",")[2]}},
              {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                           "data": garbage}}]  # fmt: skip
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": chat}]}),
        (
            "/v1/messages",
            {"system": "Be brief.", "messages": [{"role": "user", "content": blocks}]},
        ),
    ):
        reply = gateway_server.post(path, json={"model": "e2b", "max_tokens": 2, **body})
        assert reply.status_code == 400, reply.text
        assert reply.json()["error"]["message"] == (
            "messages[0].content[1]: not a decodable image: no image format recognised"
        )


def test_a_file_by_id_is_refused_with_what_to_send(client: openai.OpenAI) -> None:
    """(A PDF by URL: tests/gateway/test_media_fetch.py.)"""
    content: list[ChatCompletionContentPartParam] = [
        {"type": "file", "file": {"file_id": "file-abc123"}}
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="e2b", max_tokens=2, messages=[{"role": "user", "content": content}]
        )
    assert "this gateway keeps no files" in err.value.message
    assert "file_data" in err.value.message


def test_a_text_only_pool_is_not_sent_a_pdf(client: openai.OpenAI) -> None:
    """Each page is a picture, so a PDF goes to pools that read images."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="dense", max_tokens=2, messages=_with_pdf(text_pdf([HARVEST]))
        )
    assert "does not take image input" in err.value.message
    assert err.value.message.endswith(
        "; a PDF's pages are read as pictures, which takes image input"
    )


def test_responses_input_file_is_read(client: openai.OpenAI) -> None:
    def usage(*content: ResponseInputContentParam) -> int:
        answer = client.responses.create(
            model="e2b", max_output_tokens=16, input=[{"role": "user", "content": list(content)}]
        )
        assert answer.usage is not None
        return answer.usage.input_tokens

    question: ResponseInputTextParam = {"type": "input_text", "text": "How many tonnes of pears?"}
    pdf: ResponseInputFileParam = {"type": "input_file", "filename": "harvest.pdf",
           "file_data": "data:application/pdf;base64," + _b64(text_pdf([HARVEST]))}  # fmt: skip
    assert usage(question, pdf) > usage(question) + IMAGE_TOKENS


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ({"file_id": "file-abc123"}, "this gateway keeps no files"),
        # fetched under the media policy, which refuses the loopback address by default
        ({"file_url": "http://127.0.0.1:9/harvest.pdf"}, "127.0.0.1, a loopback address"),
        ({"file_url": "http://127.0.0.1:9/a.pdf", "file_data": "JVBERi0="}, "one of the two"),
        ({"file_data": "data:application/pdf;base64," + _b64(b"%PDF-1.4\n")},
         "input[0].content[1] is not a readable PDF"),
    ],
    ids=["id", "url", "url-and-data", "broken"],
)  # fmt: skip
def test_responses_input_file_refusals_name_the_part(
    client: openai.OpenAI, file: dict[str, str], message: str
) -> None:
    content = [{"type": "input_text", "text": "Summarise"}, {"type": "input_file", **file}]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="e2b",
            max_output_tokens=16,
            input=cast(Any, [{"role": "user", "content": content}]),  # bad on purpose
        )
    assert message in err.value.message
    assert "input[0].content[1]" in err.value.message


def _timeouts(gateway_server: RunningGateway) -> float:
    """The gateway's count of PDF reads stopped at the time limit."""
    for line in httpx.get(gateway_server.url + "/metrics").text.splitlines():
        if line.startswith(STOPS + '_total{reason="timeout"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_pdf_being_read_holds_up_no_other_request(
    gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the reader takes its time over a PDF (here a child that sleeps on it), the
    replica answers other requests."""
    worker = (sys.executable, str(Path(__file__).parents[1] / "pdf_worker_faults.py"))
    gateway = gateway_server.gateway
    slow = PdfReader(1.0, command=worker, on_stop=gateway._pdf_readers.readers[0]._on_stop)
    monkeypatch.setattr(gateway, "_pdf_readers", PdfReaders([slow]))
    before = _timeouts(gateway_server)
    body = {"model": "e2b", "max_tokens": 2, "messages": _with_pdf(text_pdf(["SLOW"]))}
    text = {"model": "e2b", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    with ThreadPoolExecutor(1) as pool:
        pdf = pool.submit(gateway_server.post, "/v1/chat/completions", json=body)
        time.sleep(0.5)  # the child started and is reading it
        answer = gateway_server.post("/v1/chat/completions", json=text)
        assert answer.status_code == 200, answer.text
        assert not pdf.done()
        abandoned = pdf.result()
    assert abandoned.status_code == 400
    assert abandoned.json()["error"]["message"].startswith(
        "messages[0].content[1] was not read within 1 s"
    )
    assert _timeouts(gateway_server) == before + 1
