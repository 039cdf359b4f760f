"""PDF documents as what Gemma 4 reads: each page's text, and a picture of the page.

Anthropic's document blocks, OpenAI's chat `file` parts and the Responses API's `input_file`
carry PDFs; the engines take text and images. The gateway has each PDF read by PDFium in a
process of its own (`pdf_process.py`, `pdf_render.py`) and gives the model, page by page, the
text of the page and the page rendered as a JPEG: the text is exact where the PDF has a text
layer, and the picture carries scans, figures and tables. Each page therefore costs an
image's soft tokens (280 by default) on top of its text. The pages of PDFs read recently are
kept (PageCache): a conversation about a document sends it again with every question, and a
client asking several questions about one document at once sends it with each.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from gemma_fleet.gateway.classify import InvalidMedia, decode_base64
from gemma_fleet.gateway.openai_models import ImagePart, ImageURL, TextPart
from gemma_fleet.gateway.pdf_process import PdfReaders
from gemma_fleet.gateway.pdf_render import Page, UnreadablePdf

PDF_MEDIA_TYPE = "application/pdf"
PDF_DATA_URL = "data:application/pdf;base64,<data>"
# What a server may call a PDF it serves: many serve files as bytes of no particular kind.
PDF_CONTENT_TYPES = (PDF_MEDIA_TYPE, "application/octet-stream")
# Pages kept of recently read PDFs, in characters of their parts (mostly base64 pictures): a
# couple of 100-page reports, or dozens of short ones, per gateway replica.
PAGE_CACHE_CHARS = 64 * 2**20

DocumentPart = TextPart | ImagePart


@dataclass
class _Reading:
    """A read of one PDF in flight, and the requests waiting for it."""

    task: asyncio.Task[list[DocumentPart]]
    where: str  # the part its errors name: the first request's
    waiters: int = 0


class PageCache:
    """The parts of recently read PDFs, by the SHA-256 of their bytes, least recently used
    first out past `max_chars`, and the reads in flight. A conversation about a document
    sends the document again with every question: read once, it costs a hash after that. A
    client asking several questions about one document at once sends it with each: they
    wait for one read (`shared`), instead of queueing for the replica's reader one after
    another. Used only on the event loop, so it needs no lock."""

    def __init__(self, max_chars: int = PAGE_CACHE_CHARS) -> None:
        self.max_chars = max_chars
        self._parts: OrderedDict[bytes, tuple[list[DocumentPart], int]] = OrderedDict()
        self._chars = 0
        self._reading: dict[bytes, _Reading] = {}

    def get(self, key: bytes) -> list[DocumentPart] | None:
        found = self._parts.get(key)
        if found is None:
            return None
        self._parts.move_to_end(key)
        return list(found[0])

    def put(self, key: bytes, parts: list[DocumentPart]) -> None:
        size = sum(len(p.text) if isinstance(p, TextPart) else len(p.image_url.url) for p in parts)
        if size > self.max_chars or key in self._parts:
            return
        self._parts[key] = (list(parts), size)
        self._chars += size
        while self._chars > self.max_chars:
            _, (_, dropped) = self._parts.popitem(last=False)
            self._chars -= dropped

    async def shared(
        self, key: bytes, where: str, read: Callable[[], Awaitable[list[DocumentPart]]]
    ) -> tuple[list[DocumentPart], bool]:
        """The parts `read()` gives, and whether they came from a read of the same PDF that
        was already in flight (joined) rather than one started here. An error names each
        request's own part (`where`). A request that goes away leaves the read to the others;
        when the last one goes, the read is stopped (its reader process with it)."""
        reading = self._reading.get(key)
        joined = reading is not None
        if reading is None:
            reading = _Reading(asyncio.ensure_future(read()), where)
            self._reading[key] = reading
            reading.task.add_done_callback(lambda task: self._read_done(key, task))
        reading.waiters += 1
        try:
            return list(await asyncio.shield(reading.task)), joined
        except InvalidMedia as exc:
            message = str(exc)
            if not joined or not message.startswith(reading.where):
                raise
            raise InvalidMedia(where + message[len(reading.where) :]) from exc
        finally:
            reading.waiters -= 1
            if reading.waiters == 0 and not reading.task.done():  # all gone: nobody waits
                self._read_done(key, reading.task)
                reading.task.cancel()

    def _read_done(self, key: bytes, task: asyncio.Task[list[DocumentPart]]) -> None:
        reading = self._reading.get(key)
        if reading is not None and reading.task is task:
            del self._reading[key]  # a request from now on starts a read of its own
        if task.done() and not task.cancelled():
            task.exception()  # its waiters have it; asyncio would log it if none did


def pdf_bytes(file_data: str, what: str) -> bytes:
    """The PDF in a `file_data` value: a data: URL of type application/pdf, or bare base64
    (the OpenAI SDK documents both forms)."""
    payload = file_data
    if file_data.startswith("data:"):
        header, _, payload = file_data.partition(",")
        media_type = header[len("data:") :].split(";")[0]
        if ";base64" not in header:
            raise InvalidMedia(f"{what}: a file's data URL must look like {PDF_DATA_URL}")
        if media_type != PDF_MEDIA_TYPE:
            raise InvalidMedia(
                f"{what}: the file is {media_type or 'untyped'}, and only PDFs "
                f"({PDF_MEDIA_TYPE}) are read; send other files' text as text"
            )
    return decode_base64(payload, f"{what}: the PDF's data")


# Where a request's PDF pages came from: read for it, found in the cache, or a read in flight
# for another request that it joined.
PageSource = Literal["read", "cache", "shared"]


class ReadPdf(NamedTuple):
    parts: list[DocumentPart]
    source: PageSource


async def read_pdf(pdf: bytes | str, where: str, cache: PageCache, readers: PdfReaders) -> ReadPdf:
    """The pages of a PDF as content parts (`page_parts`), given as its bytes or as a
    `file_data` value (`pdf_bytes`): found in `cache`, read by one of `readers`, or from a
    read of the same PDF in flight (`PageCache.shared`). `where` names the part in errors
    (InvalidMedia)."""

    def decoded() -> tuple[bytes, bytes]:
        raw = pdf if isinstance(pdf, bytes) else pdf_bytes(pdf, where)
        return raw, hashlib.sha256(raw).digest()

    # Megabytes of base64 and hashing: off the event loop.
    raw, key = await asyncio.to_thread(decoded)
    parts = cache.get(key)
    if parts is not None:
        return ReadPdf(parts, "cache")

    async def read() -> list[DocumentPart]:
        try:
            pages = await readers.read(raw, where)
        except UnreadablePdf as exc:
            raise InvalidMedia(str(exc)) from exc
        parts = page_parts(pages)
        cache.put(key, parts)
        return parts

    parts, joined = await cache.shared(key, where, read)
    return ReadPdf(parts, "shared" if joined else "read")


def page_parts(pages: list[Page]) -> list[DocumentPart]:
    """Content parts for `pages`: for each page, its number and text, then its picture."""
    parts: list[DocumentPart] = []
    for number, page in enumerate(pages, start=1):
        parts.append(TextPart(type="text", text=f'<page number="{number}">\n{page.text}\n'))
        url = f"data:image/jpeg;base64,{page.picture}"
        parts.append(ImagePart(type="image_url", image_url=ImageURL(url=url)))
        parts.append(TextPart(type="text", text="\n</page>\n"))
    return parts
