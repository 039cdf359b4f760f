"""PDF files for the tests: pages of text (the load generator's writer, a text layer PDFium
extracts), and a scan-like page (an image and no text) by way of Pillow."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from gemma_fleet.loadtest.pdf import text_pdf

__all__ = ["scanned_pdf", "text_pdf"]


def scanned_pdf(caption: str = "scanned") -> bytes:
    """A one-page PDF that is a picture only: no text for PDFium to extract."""
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).text((40, 40), caption, fill="black")
    out = io.BytesIO()
    image.save(out, format="PDF", resolution=72)
    return out.getvalue()
