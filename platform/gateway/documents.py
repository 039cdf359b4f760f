"""PDF documents as what Gemma 4 reads: each page's text, and a picture of the page.

Anthropic's document blocks, OpenAI's chat `file` parts and the Responses API's `input_file`
carry PDFs; the engines take text and images. The gateway has each PDF read by PDFium in a
process of its own (`pdf_process.py`, `pdf_render.py`) and gives the model, page by page, the
text of the page and the page rendered as a JPEG: the text is exact where the PDF has a text
layer, and the picture carries scans, figures and tables. Each page therefore costs an
image's soft tokens (280 by default) on top of its text. The pages of PDFs read recently are
kept (PageCache): a conversation about a document sends it again with every question.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from typing import NamedTuple

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


class PageCache:
    """The parts of recently read PDFs, by the SHA-256 of their bytes, least recently used
    first out past `max_chars`. A conversation about a document sends the document again
    with every question: read once, it costs a hash after that. Used only on the event
    loop, so it needs no lock."""

    def __init__(self, max_chars: int = PAGE_CACHE_CHARS) -> None:
        self.max_chars = max_chars
        self._parts: OrderedDict[bytes, tuple[list[DocumentPart], int]] = OrderedDict()
        self._chars = 0

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


class ReadPdf(NamedTuple):
    parts: list[DocumentPart]
    cached: bool  # found in the cache: no page was read


async def read_pdf(pdf: bytes | str, where: str, cache: PageCache, readers: PdfReaders) -> ReadPdf:
    """The pages of a PDF as content parts (`page_parts`), given as its bytes or as a
    `file_data` value (`pdf_bytes`): found in `cache`, or read by one of `readers`. `where`
    names the part in errors (InvalidMedia)."""

    def decoded() -> tuple[bytes, bytes]:
        raw = pdf if isinstance(pdf, bytes) else pdf_bytes(pdf, where)
        return raw, hashlib.sha256(raw).digest()

    # Megabytes of base64 and hashing: off the event loop.
    raw, key = await asyncio.to_thread(decoded)
    parts = cache.get(key)
    if parts is not None:
        return ReadPdf(parts, cached=True)
    try:
        pages = await readers.read(raw, where)
    except UnreadablePdf as exc:
        raise InvalidMedia(str(exc)) from exc
    parts = page_parts(pages)
    cache.put(key, parts)
    return ReadPdf(parts, cached=False)


def page_parts(pages: list[Page]) -> list[DocumentPart]:
    """Content parts for `pages`: for each page, its number and text, then its picture."""
    parts: list[DocumentPart] = []
    for number, page in enumerate(pages, start=1):
        parts.append(TextPart(type="text", text=f'<page number="{number}">\n{page.text}\n'))
        url = f"data:image/jpeg;base64,{page.picture}"
        parts.append(ImagePart(type="image_url", image_url=ImageURL(url=url)))
        parts.append(TextPart(type="text", text="\n</page>\n"))
    return parts
