"""The gateway's PDF reader child (`pdf_process.serve`) with faults on cue, for the tests: a
PDF whose bytes hold SLOW takes a minute, CRASH kills the process with SIGSEGV, NOISE prints
to stdout first (which must not reach the gateway). Other PDFs are read as the real child
reads them.

    python tests/pdf_worker_faults.py
"""

from __future__ import annotations

import os
import signal
import sys
import time

from gemma_fleet.gateway.pdf_process import serve
from gemma_fleet.gateway.pdf_render import Page, render_pages

SLOW_S = 60.0


def render(raw: bytes, what: str) -> list[Page]:
    if b"SLOW" in raw:
        time.sleep(SLOW_S)
    if b"CRASH" in raw:
        os.kill(os.getpid(), signal.SIGSEGV)  # as PDFium would on a bad pointer
    if b"NOISE" in raw:
        print("a stray print")
        sys.stdout.flush()
        os.write(1, b"\x00\x00\x00\x00\x00\x00\x00\x05bytes")
    return render_pages(raw, what)


if __name__ == "__main__":
    serve(render)
