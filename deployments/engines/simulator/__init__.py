"""A GPU simulator that behaves like vLLM serving Gemma 4 on a named GPU, without one.

The core (kv_pool, scheduler, roofline, core, metrics, content) is pure Python on asyncio. The
Ray Serve LLM engine and its config helpers live in `engine` (imports Ray and vLLM's protocol
models) and are loaded on first use from here, so importing the core stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gemma_fleet.deployments.engines.simulator.config import (
    EXPERIMENTAL_CONFIG_KEY,
    SimulatorConfig,
)

if TYPE_CHECKING:
    from gemma_fleet.deployments.engines.simulator.engine import (
        SimulatorEngine,
        simulator_bind_kwargs,
        simulator_llm_config,
    )

__all__ = [
    "EXPERIMENTAL_CONFIG_KEY",
    "SimulatorConfig",
    "SimulatorEngine",
    "simulator_bind_kwargs",
    "simulator_llm_config",
]

_LAZY = {"SimulatorEngine", "simulator_bind_kwargs", "simulator_llm_config"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from gemma_fleet.deployments.engines.simulator import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
