"""PDF reports for the `documents` workload: pages of text in Helvetica, a text layer the
gateway's PDF reader extracts, written directly (a few hundred bytes of structure per page), so
the load generator needs no PDF library and stays cheap."""

from __future__ import annotations

import io

# US Letter, in points; text starts an inch from the top left, 14 pt apart.
LETTER = (612, 792)
LINE_POINTS = 14
# The most pages the gateway reads of one PDF (gateway/documents.py; the load tests cannot
# import the gateway, and a test holds the two equal): a longer report would be refused.
MAX_PDF_PAGES = 100
# Words of the load generator's word list (payloads.WORDS) that fit a line of 12 pt text.
WORDS_PER_LINE = 12


def _escaped(line: str) -> str:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def text_pdf(pages: list[str], size: tuple[int, int] = LETTER) -> bytes:
    """A PDF with one page per string, each of its lines drawn as a line of 12 pt text."""
    return pdf_file(text_objects(pages, size))


def text_objects(pages: list[str], size: tuple[int, int] = LETTER) -> list[bytes]:
    """The objects of `text_pdf`, in order: catalog, page tree, font, then each page and its
    content stream."""
    width, height = size
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        lines = " T* ".join(f"({_escaped(line)}) Tj" for line in text.split("\n"))
        stream = f"BT /F1 12 Tf {LINE_POINTS} TL 72 {height - 72} Td {lines} ET".encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(stream_object(b"", stream))
    return objects


def stream_object(entries: bytes, data: bytes) -> bytes:
    """A stream object's body: its dictionary (`entries` and the length) and `data`."""
    return b"<< %s /Length %d >>\nstream\n%s\nendstream" % (entries, len(data), data)


def pdf_file(objects: list[bytes], trailer: bytes = b"") -> bytes:
    """A PDF of `objects` (numbered from 1, the first the catalog) with its cross-reference
    table; `trailer` adds entries to the trailer dictionary."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    size = len(objects) + 1
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % size)
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R %s>>\n" % (size, trailer))
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def lines_per_page(size: tuple[int, int] = LETTER) -> int:
    """How many lines fit between an inch of margin at the top and at the bottom."""
    return (size[1] - 144) // LINE_POINTS + 1
