"""Memory of the router's prefix tree at its bound, per shape of prompt.

Ray Serve LLM's prefix-aware router keeps the text of the prompts it placed in one tree actor
per pool; `deployments/pools/serve_app.py` bounds each replica's share at what its KV cache
holds. This fills one tree (Ray's own PrefixTree class, in this process) with three replicas'
prompts to twice the bound, cutting each replica back to the target as the actor's eviction
loop does, and reports the process's RSS growth: what the actor costs for a pool of three
replicas at the bound.

    ./dev run python benchmarks/prefix_tree/run.py > benchmarks/prefix_tree/results.md

Each shape runs in its own process so that one's freed memory does not serve the next.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import string
import subprocess
import sys
import time
from dataclasses import dataclass

from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import PrefixTree

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.pools import load_fleet
from gemma_fleet.deployments.pools.serve_app import (
    PREFIX_TREE_CEILING_CHARS,
    PREFIX_TREE_TARGET_SHARE,
    prefix_tree_bound_chars,
)
from gemma_fleet.deployments.pools.validate import pool_profile

REPLICAS = 3
# The bound past which the actor's eviction loop cuts a replica back, checked every 10 s; here
# after every this many insertions, about as many as a busy pool places in 10 s.
EVICT_EVERY = 200


@dataclass(frozen=True)
class Shape:
    """A kind of traffic: how long its prompts are and how much of them other prompts share."""

    name: str
    description: str
    shared_prefix_chars: tuple[int, int]  # taken from one of 50 shared system prompts
    own_chars: tuple[int, int]  # text of this prompt alone


SHAPES = {
    s.name: s
    for s in (
        Shape(
            "short-unique", "chat turns of 20-200 characters, no shared prefix", (0, 0), (20, 200)
        ),
        Shape(
            "short-shared",
            "chat turns of 20-200 characters after up to 400 of one of 50 system prompts",
            (0, 400),
            (20, 200),
        ),
        Shape(
            "long-shared",
            "documents of 200-6,000 characters after one of 50 system prompts of 2,000",
            (2000, 2000),
            (200, 6000),
        ),
    )
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def fill(shape: Shape, bound: int, seed: int = 0) -> dict[str, float]:
    """Insert prompts of `shape` round-robin over the replicas until 2x `bound` characters went
    to each, evicting as the actor does; the RSS growth and what the tree holds at the end."""
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(5000)]

    def text(low: int, high: int) -> str:
        want, out, size = rng.randint(low, high), [], 0
        while size < want:
            word = rng.choice(words)
            out.append(word)
            size += len(word) + 1
        return " ".join(out)[:want]

    systems = [text(2000, 2000) for _ in range(50)]
    tree = PrefixTree()
    tenants = [f"replica-{i}" for i in range(REPLICAS)]
    tree.add_tenants(tenants, time.time())
    target = int(bound * PREFIX_TREE_TARGET_SHARE)
    before = rss_bytes()
    sent, prompts = 0, 0
    started = time.monotonic()
    while sent < 2 * bound * REPLICAS:
        shared = rng.choice(systems)[: rng.randint(*shape.shared_prefix_chars)]
        # A unique head keeps prompts without a shared prefix apart from their first character.
        prompt = shared + f"{prompts:08d} " + text(*shape.own_chars)
        tree.insert(prompt, tenants[prompts % REPLICAS], time.time())
        sent += len(prompt)
        prompts += 1
        if prompts % EVICT_EVERY == 0:
            for tenant, chars in list(tree.tenant_to_char_count.items()):
                if chars > bound:
                    tree.evict_tenant_by_lru(tenant, chars - target)
    held = sum(tree.tenant_to_char_count.values())
    grew = rss_bytes() - before
    return {
        "prompts": prompts,
        "sent_chars": sent,
        "held_chars": held,
        "rss_growth_mb": grew / 2**20,
        "bytes_per_held_char": grew / held,
        "seconds": time.monotonic() - started,
    }


def bounds_table() -> list[str]:
    fleet = load_fleet("default")
    lines = [
        "| pool (default fleet) | GPU | TP | max_model_len | KV cache, tokens"
        " | tree bound, characters |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for pool in fleet.model_pools:
        node_pool = fleet.node_pool(pool.node_pool)
        tokens = pool_profile(pool, node_pool, load_catalog()).kv_capacity_tokens
        lines.append(
            f"| {pool.name} | {node_pool.gpu} | {pool.tp} | {pool.max_model_len:,} | {tokens:,} "
            f"| {prefix_tree_bound_chars(pool, node_pool):,} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), help="run one shape (a child process)")
    parser.add_argument("--bound", type=int, default=PREFIX_TREE_CEILING_CHARS)
    args = parser.parse_args()
    if args.shape:
        print(json.dumps(fill(SHAPES[args.shape], args.bound)))
        return
    started = time.monotonic()
    rows = []
    for shape in SHAPES.values():
        out = subprocess.run(
            [sys.executable, __file__, "--shape", shape.name, "--bound", str(args.bound)],
            check=True,
            capture_output=True,
            text=True,
        )
        rows.append((shape, json.loads(out.stdout)))
    ceiling = " (the ceiling)" if args.bound == PREFIX_TREE_CEILING_CHARS else ""
    print("# The router's prefix tree at its bound: results\n")
    print(
        f"Generated by `benchmarks/prefix_tree/run.py` in {time.monotonic() - started:.0f} s "
        f"({platform.machine()}, Python {platform.python_version()}): one tree, {REPLICAS} "
        f"replicas, each sent twice the bound of {args.bound:,} characters{ceiling}, cut "
        f"back to {PREFIX_TREE_TARGET_SHARE:.0%} of it every {EVICT_EVERY} prompts.\n"
    )
    print(
        "| shape | sent, characters in prompts | held | RSS growth (MB)"
        " | bytes per held character | MB per replica at the bound |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for shape, r in rows:
        per_replica = r["bytes_per_held_char"] * args.bound / 2**20
        print(
            f"| {shape.description} | {r['sent_chars']:,} in {r['prompts']:,} | "
            f"{r['held_chars']:,} | {r['rss_growth_mb']:.0f} | {r['bytes_per_held_char']:.1f} | "
            f"{per_replica:.0f} |"
        )
    print(
        "\nBounds per pool (`prefix_tree_bound_chars`: the VRAM profile's KV cache x 4"
        " characters, at most the ceiling):\n"
    )
    print("\n".join(bounds_table()))


if __name__ == "__main__":
    main()
