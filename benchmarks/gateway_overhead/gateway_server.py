"""Gemma Fleet's gateway in front of one HTTP pool (the mock backend): classification, routing,
validation and metrics on; with --redis-url also team auth, quota admission, settlement and
usage metering against a real Redis (the key comes from --key, as a bootstrap file would)."""

import argparse
import sys
import tempfile
from pathlib import Path

import uvicorn
import yaml

from gemma_fleet.catalog import load_catalog
from gemma_fleet.gateway import service
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient
from gemma_fleet.gateway.service import Gateway, GatewaySettings, PoolInfo
from gemma_fleet.teams.settings import TeamsSettings

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--redis-url", help="require team keys, with this Redis as the store")
    parser.add_argument("--key", help="the benchmark team's key (with --redis-url)")
    parser.add_argument(
        "--inline-media",
        action="store_true",
        help="decode inline media on the event loop, as before 2026-12-06 (gateway_media_stall)",
    )
    parser.add_argument(
        "--pdf-readers", type=int, default=1, help="PDF reader processes (gateway_pdf_read)"
    )
    args = parser.parse_args()
    if args.inline_media:
        service.OFFLOAD_MEDIA_CHARS = sys.maxsize
    catalog = load_catalog()
    settings = GatewaySettings(
        pools=[
            PoolInfo(
                name="e2b",
                model="gemma-4-E2B",
                max_model_len=32_768,
                modalities=catalog.model("gemma-4-E2B").modalities,
                capacity=1024,
                size_rank=1.0,
            )
        ],
        aliases={"gemma-4": ["e2b"]},
        pdf_readers=args.pdf_readers,
    )
    client = HttpPoolClient({"e2b": HttpPool(args.backend, "mock")})
    gate = None
    if args.redis_url:
        # Every limit set (and far from reached), so admission runs all four checks.
        limits = {"requests_per_minute": 10**6, "tokens_per_minute": 10**9,
                  "max_concurrent_requests": 1000, "token_budget": 10**12}  # fmt: skip
        teams = {"teams": [{"name": "bench", "limits": limits, "keys": [args.key]}]}
        bootstrap = Path(tempfile.mkdtemp()) / "teams.yaml"
        bootstrap.write_text(yaml.safe_dump(teams))
        gate = open_gate(
            TeamsSettings(auth_required=True, redis_url=args.redis_url, bootstrap_file=bootstrap)
        )
    app = create_app(Gateway(settings, client, catalog.family), gate)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
