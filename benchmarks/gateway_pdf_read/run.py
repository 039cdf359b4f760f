"""What reading PDFs costs a gateway replica, and its other callers.

Part 1 reads 100-page PDFs with the gateway's own reader, here in this process
(`gateway/pdf_render.py`, the gateway runs it in a child: each page's text and a 1024 px JPEG
of it, in base64), three kinds of page: dense text (47 lines of 12 words), one short line, and
a picture with no text layer. Part 2 sends small text chat requests one after
another to the gateway of ../gateway_overhead (in front of its 5 ms mock backend), first alone
and then while a second process sends 20-page dense PDFs back to back (each different, so the
gateway's page cache does not answer them), and reports the text requests' latency both ways,
how long each PDF request took, and the pages the gateway read and took from its cache. Part 3
has two clients send those PDFs back to back to a replica with one PDF reader process and
then with two (`gateway.pdf_readers`), and reports how many it read.

    .venv/bin/python benchmarks/gateway_pdf_read/run.py            # about 2 minutes
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import multiprocessing
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, ImageDraw

from gemma_fleet.gateway.documents import page_parts
from gemma_fleet.gateway.pdf_render import render_pages
from gemma_fleet.loadtest.payloads import WORDS
from gemma_fleet.loadtest.pdf import WORDS_PER_LINE, lines_per_page, text_pdf

HERE = Path(__file__).resolve().parent
SERVERS = HERE.parent / "gateway_overhead"

# The stall benchmark's clients and summary, so the two measure text requests the same way.
_spec = importlib.util.spec_from_file_location(
    "media_stall", HERE.parent / "gateway_media_stall" / "run.py"
)
assert _spec is not None and _spec.loader is not None
media_stall = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(media_stall)
summary, text_beside = media_stall.summary, media_stall.text_beside

BACKEND, GATEWAY = 18581, 18582
SENDERS = 2  # part 3's clients sending PDFs at once
PAGES_METRIC = "gemma_fleet_gateway_document_pages_total"
TEXT = {"model": "gemma-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Say ok"}]}


def dense_page(rng: random.Random) -> str:
    lines = [" ".join(rng.choices(WORDS, k=WORDS_PER_LINE)) for _ in range(lines_per_page())]
    return "\n".join(lines)


def picture_pdf(pages: int) -> bytes:
    """`pages` pages that are pictures only (a scan): nothing for the reader to extract."""
    images = []
    for n in range(pages):
        image = Image.new("RGB", (850, 1100), "white")
        draw = ImageDraw.Draw(image)
        for row in range(40):
            draw.text((60, 60 + 25 * row), f"scanned page {n + 1}, row {row + 1} " * 3, "black")
        images.append(image)
    out = io.BytesIO()
    images[0].save(out, format="PDF", resolution=100, save_all=True, append_images=images[1:])
    return out.getvalue()


def read_cost(name: str, raw: bytes, repeats: int = 3) -> dict[str, Any]:
    took = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        parts = page_parts(render_pages(raw, name))
        took.append(time.perf_counter() - t0)
    pages = sum(p.type == "image_url" for p in parts)
    pictures = sum(len(p.image_url.url) for p in parts if p.type == "image_url")
    text = sum(len(p.text) for p in parts if p.type == "text")
    return {
        "page": name,
        "pages": pages,
        "pdf_kb": round(len(raw) / 1024, 1),
        "ms_per_page": round(1000 * min(took) / pages, 2),
        "picture_kb_per_page": round(pictures / pages / 1024, 1),
        "text_chars_per_page": round(text / pages),
    }


def pdf_body(raw: bytes) -> bytes:
    file = {"file_data": "data:application/pdf;base64," + base64.b64encode(raw).decode()}
    content = [{"type": "text", "text": "Summarise it"}, {"type": "file", "file": file}]
    return json.dumps({**TEXT, "messages": [{"role": "user", "content": content}]}).encode()


def pages_by_source(client: httpx.Client) -> dict[str, float]:
    """The gateway's PDF pages so far, by where they came from (`read` or `cache`)."""
    found = {"read": 0.0, "cache": 0.0}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(PAGES_METRIC + "{"):
            labels, _, value = line.rpartition(" ")
            for source in found:
                if f'source="{source}"' in labels:
                    found[source] = float(value)
    return found


@contextlib.contextmanager
def gateway(logs: Path, readers: int = 1) -> Iterator[str]:
    """The gateway of ../gateway_overhead with `readers` PDF reader processes, in front of its
    5 ms mock backend; yields its URL once it answers."""
    backend = subprocess.Popen(
        [sys.executable, str(SERVERS / "mock_backend.py"), "--port", str(BACKEND),
         "--delay-ms", "5"],
        stdout=(logs / "backend.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, str(SERVERS / "gateway_server.py"), "--port", str(GATEWAY),
         "--backend", f"http://127.0.0.1:{BACKEND}", "--pdf-readers", str(readers)],
        stdout=(logs / "gateway.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{GATEWAY}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            media_stall.wait_ready(client)
        yield url
    finally:
        for process in (server, backend):
            process.terminate()
            process.wait(30)


def stall(bodies: list[bytes], seconds: float, logs: Path) -> dict[str, Any]:
    with gateway(logs) as url:
        quiet, loaded, pdfs = text_beside(url, bodies, seconds)
        with httpx.Client(base_url=url) as client:
            pages = pages_by_source(client)
    return {
        "text, no PDFs": summary(quiet),
        "text, with PDFs": summary(loaded),
        "PDF requests": len(pdfs),
        "PDF request mean_ms": round(1000 * statistics.fmean(pdfs), 1),
        "PDF pages read": int(pages["read"]),
        "PDF pages from the cache": int(pages["cache"]),
    }


def throughput(bodies: list[bytes], seconds: float, logs: Path, readers: int) -> dict[str, Any]:
    """PDFs read by one replica with `readers` reader processes, while `SENDERS` clients send
    different PDFs back to back."""
    with gateway(logs, readers) as url:
        queue: Any = multiprocessing.Queue()
        until = time.time() + seconds
        senders = [
            multiprocessing.Process(
                target=media_stall.send_images, args=(url, bodies[k::SENDERS], until, queue)
            )
            for k in range(SENDERS)
        ]
        for sender in senders:
            sender.start()
        took = [t for _ in senders for t in queue.get(timeout=seconds + 120)]
        for sender in senders:
            sender.join(30)
        with httpx.Client(base_url=url) as client:
            pages = pages_by_source(client)
    return {
        "pdf_readers": readers,
        "PDF requests": len(took),
        "PDF request mean_ms": round(1000 * statistics.fmean(took), 1),
        "pages read per second": round(pages["read"] / seconds, 1),
        "PDF pages from the cache": int(pages["cache"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="per phase of part 2")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    rng = random.Random(1)
    reads = [
        read_cost("dense text", text_pdf([dense_page(rng) for _ in range(100)])),
        read_cost("one short line", text_pdf([f"Page {n}" for n in range(100)])),
        read_cost("picture only", picture_pdf(100)),
    ]
    # More PDFs than the sender gets through (about 4 a second), and it starts again from the
    # first only after the cache (about 8 such PDFs) has long dropped it.
    raws = [text_pdf([dense_page(rng) for _ in range(20)]) for _ in range(int(10 * args.seconds))]
    bodies = [pdf_body(raw) for raw in raws]
    logs = Path(tempfile.mkdtemp(prefix="pdf-read-"))
    report = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "read_100_pages": reads,
        "stall": {
            "pdf_pages": 20,
            "pdf_kb": round(statistics.fmean(map(len, raws)) / 1024, 1),
            "body_kb": round(statistics.fmean(map(len, bodies)) / 1024, 1),
            "seconds_per_phase": args.seconds,
            **stall(bodies, args.seconds, logs),
        },
    }
    report["readers"] = [throughput(bodies, args.seconds, logs, n) for n in (1, 2)]
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
