"""PDF files for the tests: pages of text (the load generator's writer, a text layer PDFium
extracts), and a scan-like page (an image and no text) by way of Pillow."""

from __future__ import annotations

import io
import re

from PIL import Image, ImageDraw

from gemma_fleet.loadtest.pdf import text_pdf

__all__ = ["locked_pdf", "scanned_pdf", "text_pdf"]


def scanned_pdf(caption: str = "scanned") -> bytes:
    """A one-page PDF that is a picture only: no text for PDFium to extract."""
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).text((40, 40), caption, fill="black")
    out = io.BytesIO()
    image.save(out, format="PDF", resolution=72)
    return out.getvalue()


def locked_pdf() -> bytes:
    """A one-page PDF encrypted with a user password (not the empty one PDFium tries): the
    standard security handler's dictionary, with an /U entry no empty password matches."""
    body = text_pdf(["secret"]).rpartition(b"xref")[0]
    offsets = [m.start() for m in re.finditer(rb"(?m)^\d+ 0 obj$", body)]
    offsets.append(len(body))
    body += b"%d 0 obj\n<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>\nendobj\n" % (
        len(offsets),
        b"ab" * 32,
        b"cd" * 32,
    )
    size = len(offsets) + 1
    table = b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"trailer\n<< /Size %d /Root 1 0 R /Encrypt %d 0 R /ID [<%s><%s>] >>\n" % (
        size,
        len(offsets),
        b"11" * 16,
        b"11" * 16,
    )
    xref = len(body)
    return (
        body
        + b"xref\n0 %d\n0000000000 65535 f \n" % size
        + table
        + trailer
        + (b"startxref\n%d\n%%%%EOF\n" % xref)
    )
