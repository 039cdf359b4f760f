"""PDF documents as what Gemma 4 reads: each page's text, and a picture of the page.

Anthropic's document blocks, OpenAI's chat `file` parts and the Responses API's `input_file`
carry PDFs; the engines take text and images. The gateway reads a PDF with PDFium and gives
the model, page by page, the text of the page and the page rendered as a JPEG: the text is
exact where the PDF has a text layer, and the picture carries scans, figures and tables.
Each page therefore costs an image's soft tokens (280 by default) on top of its text.

PDFium is not thread-safe, so every call into it runs on one worker thread of its own: a
replica reads one PDF at a time, off the event loop, while it keeps serving other requests.
The pages of PDFs read recently are kept (PageCache): a conversation about a document sends
it again with every question.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

from gemma_fleet.gateway.classify import InvalidMedia, decode_base64
from gemma_fleet.gateway.openai_models import ImagePart, ImageURL, TextPart

if TYPE_CHECKING:
    import pypdfium2

# Anthropic's own page limit for a PDF; each page is an image for the engine.
MAX_PDF_PAGES = 100
# Longest side of a rendered page. Gemma 4 sees an image as 48 px squares, one soft token
# each: a US Letter page at 1024 px is about 350 squares, a little more than the default budget
# (280), which the encoder scales down to. Larger budgets (560, 1120) would read more detail
# from a larger picture, at 1.8 times the bytes (1536 px against 1024, a dense text page).
PAGE_LONG_SIDE_PX = 1024
# JPEG: on a dense text page at 1024 px, a fifth of PNG's encoding time and three quarters
# of its size (276 KB a full page: benchmarks/gateway_pdf_read).
PAGE_JPEG_QUALITY = 85
# Text a document may hold once extracted (about 1M tokens, beyond every pool's context): a
# few megabytes of compressed streams can expand to gigabytes of text.
MAX_DOCUMENT_TEXT_CHARS = 4_000_000
PDF_MEDIA_TYPE = "application/pdf"
PDF_DATA_URL = "data:application/pdf;base64,<data>"
# What a server may call a PDF it serves: many serve files as bytes of no particular kind.
PDF_CONTENT_TYPES = (PDF_MEDIA_TYPE, "application/octet-stream")
# Pages kept of recently read PDFs, in characters of their parts (mostly base64 pictures): a
# couple of 100-page reports, or dozens of short ones, per gateway replica.
PAGE_CACHE_CHARS = 64 * 2**20

# One thread for the process: PDFium keeps global state, and two documents read at once from
# two threads can crash the process (pypdfium2's documentation says so).
_PDFIUM = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pdfium")

DocumentPart = TextPart | ImagePart


class PageCache:
    """The parts of recently read PDFs, by the SHA-256 of their bytes, least recently used
    first out past `max_chars`. A conversation about a document sends the document again
    with every question: read once, it costs a hash after that. Used only on PDFium's
    thread, so it needs no lock."""

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


async def read_pdf(pdf: bytes | str, where: str, cache: PageCache) -> ReadPdf:
    """The pages of a PDF (`pdf_parts`), given as its bytes or as a `file_data` value
    (`pdf_bytes`), read on PDFium's own thread, or found in `cache`; `where` names the part
    in errors."""

    def read() -> ReadPdf:
        raw = pdf if isinstance(pdf, bytes) else pdf_bytes(pdf, where)
        key = hashlib.sha256(raw).digest()
        parts = cache.get(key)
        if parts is not None:
            return ReadPdf(parts, cached=True)
        parts = pdf_parts(raw, where)
        cache.put(key, parts)
        return ReadPdf(parts, cached=False)

    return await asyncio.get_running_loop().run_in_executor(_PDFIUM, read)


def pdf_parts(raw: bytes, what: str) -> list[DocumentPart]:
    """The pages of the PDF in `raw` as content parts: for each page, its number and text,
    then its picture. Raises InvalidMedia, naming `what`, for a file PDFium cannot open, a
    password-protected one, or one beyond the page or text limits. Call it on PDFium's
    thread (`read_pdf`)."""
    import pypdfium2 as pdfium  # local: only a gateway that is sent PDFs loads PDFium

    if b"%PDF-" not in raw[:1024]:  # where PDF readers look for the header
        raise InvalidMedia(f"{what} is not a PDF: no %PDF- header in its first 1,024 bytes")
    try:
        document = pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        reason = _pdfium_reason(exc)
        if "password" in reason:  # PDFium opens with the empty password, which did not fit
            raise InvalidMedia(f"{what} is password-protected: send it unlocked") from exc
        raise InvalidMedia(f"{what} is not a readable PDF: {reason}") from exc
    try:
        pages = len(document)
        if pages == 0:
            raise InvalidMedia(f"{what} has no pages")
        if pages > MAX_PDF_PAGES:
            raise InvalidMedia(f"{what} has {pages} pages; at most {MAX_PDF_PAGES} are read")
        parts: list[DocumentPart] = []
        chars = 0
        for number in range(1, pages + 1):
            text, jpeg = _read_page(document, number, what)
            chars += len(text)
            if chars > MAX_DOCUMENT_TEXT_CHARS:
                raise InvalidMedia(
                    f"{what} holds more than {MAX_DOCUMENT_TEXT_CHARS:,} characters of text "
                    f"(reached on page {number})"
                )
            parts.append(TextPart(type="text", text=f'<page number="{number}">\n{text}\n'))
            url = f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode()}"
            parts.append(ImagePart(type="image_url", image_url=ImageURL(url=url)))
            parts.append(TextPart(type="text", text="\n</page>\n"))
        return parts
    finally:
        document.close()


def _read_page(document: pypdfium2.PdfDocument, number: int, what: str) -> tuple[str, bytes]:
    """Page `number`'s text (line ends as \\n) and a JPEG of it."""
    import pypdfium2 as pdfium

    page = document[number - 1]
    try:
        width, height = page.get_size()
        if min(width, height) <= 0:
            raise InvalidMedia(f"{what}: page {number} has no area ({width}x{height} points)")
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
        finally:
            textpage.close()
        # PDFium rounds a side up, so even a hairline page is a pixel wide.
        scale = PAGE_LONG_SIDE_PX / max(width, height)
        bitmap = page.render(scale=scale)
        try:
            image = bitmap.to_pil()
        finally:
            bitmap.close()
        jpeg = io.BytesIO()
        image.convert("RGB").save(jpeg, format="JPEG", quality=PAGE_JPEG_QUALITY)
        return text, jpeg.getvalue()
    except pdfium.PdfiumError as exc:
        raise InvalidMedia(f"{what}: page {number} cannot be read: {_pdfium_reason(exc)}") from exc
    finally:
        page.close()


def _pdfium_reason(exc: Exception) -> str:
    """PDFium's reason, without pypdfium2's wrapping ("Failed to load document (PDFium: ...)")."""
    message = str(exc)
    start = message.find("(PDFium: ")
    if start >= 0:
        return message[start + len("(PDFium: ") :].rstrip(".").rstrip(")").lower()
    return message
