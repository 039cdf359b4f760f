"""How long other requests wait while a fleet serves large whole answers with logprobs.

Against a running local fleet (`./dev up`): two probes send one-token chat requests every
0.3 s, one to the model the large answers go to (gemma-4-e2b: its pool replica builds them)
and one to another (gemma-4-e4b: only the gateway is shared); meanwhile `--answers` clients
at once each ask for a whole (non-streamed) answer of n 16 x 1,000 tokens with top_logprobs
20 (336,000 logprob entries, a 27 MB answer, under the gateway's bound of 400,000). Reported:
each probe's latency (p50, p99, max) and status codes, and the large answers' status codes,
size and time.

    .venv/bin/python benchmarks/whole_answer_stall/run.py --api-key "$(cat key)"
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
LARGE = {
    "model": "gemma-4-e2b",
    "messages": [{"role": "user", "content": "hi"}],
    "n": 16,
    "max_tokens": 1000,
    "ignore_eos": True,
    "temperature": 1,
    "logprobs": True,
    "top_logprobs": 20,
}


def probe(url: str, headers: dict[str, str], model: str, stop: threading.Event) -> dict[str, Any]:
    """One-token requests to `model` every 0.3 s until `stop`: their latency and statuses."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    took: list[float] = []
    codes: Counter[str] = Counter()
    with httpx.Client(timeout=120, headers=headers) as client:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                codes[str(client.post(url, json=body).status_code)] += 1
            except httpx.HTTPError as exc:
                codes[type(exc).__name__] += 1
            took.append(time.perf_counter() - started)
            stop.wait(0.3)
    took.sort()
    return {
        "model": model,
        "requests": len(took),
        "codes": dict(codes),
        "p50_s": round(statistics.median(took), 3),
        "p99_s": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3),
        "max_s": round(took[-1], 3),
    }


def large(url: str, headers: dict[str, str]) -> tuple[int, int]:
    """One large whole answer: its status and size in bytes."""
    response = httpx.post(url, json=LARGE, headers=headers, timeout=1200)
    return response.status_code, len(response.content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--api-key", default=os.environ.get("GEMMA_FLEET_API_KEY", ""))
    parser.add_argument("--answers", type=int, default=8, help="large answers at once")
    parser.add_argument("--label", default="as shipped", help="names the run in the output")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    url = args.url + "/v1/chat/completions"
    headers = {"authorization": f"Bearer {args.api_key}"}
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(args.answers + 2) as pool:
        probes = [pool.submit(probe, url, headers, m, stop) for m in ("gemma-4-e2b", "gemma-4-e4b")]
        time.sleep(5)  # the probes' quiet latency first
        started = time.perf_counter()
        answers = list(pool.map(lambda _: large(url, headers), range(args.answers)))
        seconds = time.perf_counter() - started
        time.sleep(10)  # and after: a replica Serve restarted would show as 503s here
        stop.set()
        run = {
            "label": args.label,
            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "large answers": {
                "count": args.answers,
                "codes": dict(Counter(str(code) for code, _ in answers)),
                "mb": round(sum(size for _, size in answers) / 1e6, 1),
                "seconds": round(seconds, 1),
            },
            "probes": [p.result() for p in probes],
        }
    print(json.dumps(run, indent=1))
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    args.out.write_text(json.dumps([*runs, run], indent=1) + "\n")


if __name__ == "__main__":
    main()
