"""PDF files for the tests: pages of text (the load generator's writer, a text layer PDFium
extracts), a scan-like page (an image and no text) by way of Pillow, a password-protected
file, a page that draws an image far larger than itself, and one whose compressed content
inflates a thousandfold."""

from __future__ import annotations

import io
import zlib

from PIL import Image, ImageDraw

from gemma_fleet.loadtest.pdf import pdf_file, stream_object, text_objects, text_pdf

__all__ = ["huge_image_pdf", "inflating_pdf", "locked_pdf", "scanned_pdf", "text_pdf"]


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
    objects = text_objects(["secret"])
    objects.append(
        b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P -4 >>" % (b"ab" * 32, b"cd" * 32)
    )
    ids = b"11" * 16
    return pdf_file(objects, b"/Encrypt %d 0 R /ID [<%s><%s>] " % (len(objects), ids, ids))


def huge_image_pdf(side: int) -> bytes:
    """A one-page PDF whose page draws a side x side RGB image of zeros: side**2 * 3 bytes once
    decoded (1.2 GB at 20,000), a thousandth of that compressed."""
    packer = zlib.compressobj(1)
    row = bytes(side * 3)
    image = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    pixels = b"/Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB " % (
        side,
        side,
    )
    return pdf_file(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /XObject << /Im1 5 0 R >> >> /Contents 4 0 R >>",
            stream_object(b"", b"q 612 0 0 792 0 0 cm /Im1 Do Q"),
            stream_object(pixels + b"/BitsPerComponent 8 /Filter /FlateDecode", image),
        ]
    )


def inflating_pdf(inflated_mib: int) -> bytes:
    """A one-page PDF whose content stream, Flate-compressed, inflates to `inflated_mib` MiB of
    spaces before its one line of text: about a thousandth of that on the wire."""
    objects = text_objects(["inflated"])
    content = objects[-1]
    text = content[content.index(b"stream\n") + 7 : content.rindex(b"\nendstream")]
    packer = zlib.compressobj(9)
    spaces = b" " * 2**20
    data = b"".join(packer.compress(spaces) for _ in range(inflated_mib))
    objects[-1] = stream_object(
        b"/Filter /FlateDecode", data + packer.compress(text) + packer.flush()
    )
    return pdf_file(objects)
