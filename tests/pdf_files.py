"""PDF files for the tests, written from scratch: pages of text in Helvetica (a text layer
PDFium extracts), and a scan-like page (an image and no text) by way of Pillow."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw


def text_pdf(pages: list[str], size: tuple[int, int] = (612, 792)) -> bytes:
    """A PDF with one page per string, each line of it drawn as text (US Letter by default)."""
    width, height = size
    count = len(pages)
    # objects: 1 catalog, 2 page tree, 3 font, then a page and its content stream per page
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        lines = [
            "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj"
            for line in text.split("\n")
        ]
        stream = f"BT /F1 12 Tf 14 TL 72 {height - 72} Td " + " T* ".join(lines) + " ET"
        objects.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>"
            ).encode()
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream".encode())
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return out.getvalue()


def scanned_pdf(caption: str = "scanned") -> bytes:
    """A one-page PDF that is a picture only: no text for PDFium to extract."""
    image = Image.new("RGB", (400, 300), "white")
    ImageDraw.Draw(image).text((40, 40), caption, fill="black")
    out = io.BytesIO()
    image.save(out, format="PDF", resolution=72)
    return out.getvalue()
