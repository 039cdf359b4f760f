"""How long a gateway replica's other callers wait while it takes in large inline images.

One client sends small text chat requests one after another; for the second half of each run
a second process sends 15 MB PNG requests back to back to the same gateway. Both go through
the gateway of ../gateway_overhead in front of its mock backend (5 ms), once with the image
decoded and checked in a worker thread (the gateway as shipped) and once on the event loop
(`--inline-media`, the gateway before 2026-12-06). Reported: the text requests' latency
without and with the images, and how long each image request took.

    .venv/bin/python benchmarks/gateway_media_stall/run.py
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

HERE = Path(__file__).resolve().parent
SERVERS = HERE.parent / "gateway_overhead"
BACKEND, GATEWAY = 18571, 18572
TEXT = {"model": "gemma-4", "max_tokens": 8, "messages": [{"role": "user", "content": "Say ok"}]}


def png_body(width: int, height: int) -> bytes:
    """A chat request with one noise PNG (it does not compress) as a data URL."""
    buf = io.BytesIO()
    noise = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    noise.save(buf, format="PNG", compress_level=1)
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    content = [
        {"type": "text", "text": "Describe it"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return json.dumps({**TEXT, "messages": [{"role": "user", "content": content}]}).encode()


def send_images(url: str, bodies: Sequence[bytes], until: float, out: Any) -> None:
    """Post `bodies` in turn (from the first again after the last), back to back until `until`
    (time.time()); put each request's seconds."""
    took = []
    with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as client:
        for body in itertools.cycle(bodies):
            if time.time() >= until:
                break
            t0 = time.perf_counter()
            reply = client.post(url + "/v1/chat/completions", content=body)
            if reply.status_code != 200:
                raise RuntimeError(f"image request: HTTP {reply.status_code}: {reply.text[:300]}")
            took.append(time.perf_counter() - t0)
    out.put(took)


def text_latencies(client: httpx.Client, seconds: float) -> list[float]:
    """Milliseconds of each text request sent one after another for `seconds`."""
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        reply = client.post("/v1/chat/completions", json=TEXT)
        if reply.status_code != 200:
            raise RuntimeError(f"text request: HTTP {reply.status_code}: {reply.text[:300]}")
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(ms, n=100, method="inclusive")
    return {"requests": len(ms), "p50_ms": round(cuts[49], 2), "p99_ms": round(cuts[98], 2),
            "max_ms": round(max(ms), 2)}  # fmt: skip


def run(mode: str, body: bytes, seconds: float, logs: Path) -> dict[str, Any]:
    flags = ["--inline-media"] if mode == "on the event loop" else []
    server = subprocess.Popen(
        [sys.executable, str(SERVERS / "gateway_server.py"), "--port", str(GATEWAY),
         "--backend", f"http://127.0.0.1:{BACKEND}", *flags],
        stdout=(logs / "gateway.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{GATEWAY}"
    try:
        quiet, loaded, images = text_beside(url, [body], seconds)
    finally:
        server.terminate()
        server.wait(30)
    return {
        "image decoded": mode,
        "text, no images": summary(quiet),
        "text, with images": summary(loaded),
        "image requests": len(images),
        "image request mean_ms": round(1000 * statistics.fmean(images), 1),
    }


def text_beside(
    url: str, bodies: Sequence[bytes], seconds: float
) -> tuple[list[float], list[float], Any]:
    """Against the gateway at `url`: text latencies for `seconds` alone, then for `seconds`
    while another process posts `bodies` back to back; and that process's request seconds."""
    with httpx.Client(base_url=url, timeout=60) as client:
        wait_ready(client)
        text_latencies(client, 2)  # warm-up
        quiet = text_latencies(client, seconds)
        queue: Any = multiprocessing.Queue()
        sender = multiprocessing.Process(
            target=send_images, args=(url, bodies, time.time() + seconds, queue)
        )
        sender.start()
        loaded = text_latencies(client, seconds)
        heavy = queue.get(timeout=120)
        sender.join(30)
    return quiet, loaded, heavy


def wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the gateway did not come up in 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="per phase")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="media-stall-"))
    backend = subprocess.Popen(
        [sys.executable, str(SERVERS / "mock_backend.py"), "--port", str(BACKEND),
         "--delay-ms", "5"],
        stdout=(logs / "backend.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    body = png_body(2600, 2000)
    try:
        results = [run(m, body, args.seconds, logs) for m in ("in a thread", "on the event loop")]
    finally:
        backend.terminate()
        backend.wait(30)
    report = {
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "body_mb": round(len(body) / 1e6, 1),
        "seconds_per_phase": args.seconds,
        "runs": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
