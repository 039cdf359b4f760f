"""PDF files for the tests: pages of text (the load generator's writer, a text layer PDFium
extracts), and a scan-like page (an image and no text) by way of Pillow."""

from __future__ import annotations

import io
import re
import zlib

from PIL import Image, ImageDraw

from gemma_fleet.loadtest.pdf import text_pdf

__all__ = ["huge_image_pdf", "locked_pdf", "scanned_pdf", "text_pdf"]


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


def huge_image_pdf(side: int) -> bytes:
    """A one-page PDF whose page draws a side x side RGB image of zeros: side**2 * 3 bytes once
    decoded (1.2 GB at 20,000), a thousandth of that compressed."""
    packer = zlib.compressobj(1)
    row = bytes(side * 3)
    image = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    draw = b"q 612 0 0 792 0 0 cm /Im1 Do Q"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(draw), draw),
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
        b"/BitsPerComponent 8 /Filter /FlateDecode /Length %d >>\nstream\n%s\nendstream"
        % (side, side, len(image), image),
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
