"""Gemma Fleet's gateway in front of one HTTP pool (the mock backend): classification, routing,
validation and metrics on; team auth and quotas are not built yet (issue 5)."""

import argparse

import uvicorn

from gemma_fleet.catalog import load_catalog
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient
from gemma_fleet.gateway.service import Gateway, GatewaySettings, PoolInfo

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", required=True)
    args = parser.parse_args()
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
    )
    client = HttpPoolClient({"e2b": HttpPool(args.backend, "mock")})
    app = create_app(Gateway(settings, client, catalog.family))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
