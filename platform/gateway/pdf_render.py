"""A PDF's pages as PDFium reads them: each page's text, and a JPEG picture of the page.

This runs in the gateway's PDF reader process (`pdf_process.py`), not in the gateway's own:
PDFium parses untrusted files in C. It imports nothing of the gateway, so that process starts
in a fraction of a second.
"""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING, NamedTuple

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


class UnreadablePdf(Exception):
    """A file PDFium cannot read, or one beyond the limits; the message names the part."""


class Page(NamedTuple):
    text: str  # as PDFium extracts it, line ends as \n
    picture: str  # the page as a JPEG, base64


def render_pages(raw: bytes, what: str) -> list[Page]:
    """The pages of the PDF in `raw`. Raises UnreadablePdf, naming `what`, for a file PDFium
    cannot open, a password-protected one, or one beyond the page or text limits. PDFium is
    not thread-safe: one call at a time per process."""
    import pypdfium2 as pdfium  # local: the gateway's own process never loads PDFium

    if b"%PDF-" not in raw[:1024]:  # where PDF readers look for the header
        raise UnreadablePdf(f"{what} is not a PDF: no %PDF- header in its first 1,024 bytes")
    try:
        document = pdfium.PdfDocument(raw)
    except pdfium.PdfiumError as exc:
        reason = _pdfium_reason(exc)
        if "password" in reason:  # PDFium opens with the empty password, which did not fit
            raise UnreadablePdf(f"{what} is password-protected: send it unlocked") from exc
        raise UnreadablePdf(f"{what} is not a readable PDF: {reason}") from exc
    try:
        count = len(document)
        if count == 0:
            raise UnreadablePdf(f"{what} has no pages")
        if count > MAX_PDF_PAGES:
            raise UnreadablePdf(f"{what} has {count} pages; at most {MAX_PDF_PAGES} are read")
        pages: list[Page] = []
        chars = 0
        for number in range(1, count + 1):
            text, jpeg = _read_page(document, number, what)
            chars += len(text)
            if chars > MAX_DOCUMENT_TEXT_CHARS:
                raise UnreadablePdf(
                    f"{what} holds more than {MAX_DOCUMENT_TEXT_CHARS:,} characters of text "
                    f"(reached on page {number})"
                )
            pages.append(Page(text, base64.b64encode(jpeg).decode("ascii")))
        return pages
    finally:
        document.close()


def _read_page(document: pypdfium2.PdfDocument, number: int, what: str) -> tuple[str, bytes]:
    """Page `number`'s text (line ends as \\n) and a JPEG of it."""
    import pypdfium2 as pdfium

    page = document[number - 1]
    try:
        width, height = page.get_size()
        if min(width, height) <= 0:
            raise UnreadablePdf(f"{what}: page {number} has no area ({width}x{height} points)")
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
        reason = _pdfium_reason(exc)
        raise UnreadablePdf(f"{what}: page {number} cannot be read: {reason}") from exc
    finally:
        page.close()


def _pdfium_reason(exc: Exception) -> str:
    """PDFium's reason, without pypdfium2's wrapping ("Failed to load document (PDFium: ...)")."""
    message = str(exc)
    start = message.find("(PDFium: ")
    if start >= 0:
        return message[start + len("(PDFium: ") :].rstrip(".").rstrip(")").lower()
    return message
