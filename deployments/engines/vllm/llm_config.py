"""A pool's full `ray.serve.llm.LLMConfig`: engine settings plus Ray placement and deployment.

Placement differs by host kind, and both are supported:

- GPU clusters: one bundle per tensor-parallel rank, ``{"GPU": 1, "gpu_pool_<node-pool>": 1}``,
  packed onto one node (``STRICT_PACK``) so TP traffic stays on NVLink/PCIe. The custom
  resource pins the replica to the node pool the autoscaler chose; Ray Serve LLM adds the
  replica actor's own CPU to the first bundle and starts vLLM's workers with the Ray executor.
- vLLM's CPU build: CPU-only bundles, ``{"CPU": n}`` with ``STRICT_PACK``. Ray Serve LLM then
  runs the engine with vLLM's multiprocessing executor inside the replica's node, so the bundle
  only reserves logical CPUs; it must hold at least one (an all-zero bundle is invalid in Ray).
  Measured on a 2-core box: ``ray.init(num_cpus=8)`` (logical CPUs above physical) is needed
  for the replica (1 + bundle) and the OpenAI ingress replicas to schedule at all.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from gemma_fleet.deployments.engines.vllm.settings import VllmEngineSpec, VllmSettingsError

if TYPE_CHECKING:
    from ray.serve.llm import LLMConfig

GPU_POOL_RESOURCE_PREFIX = "gpu_pool_"
# The engine class LLMServer runs (Ray Serve LLM reads it from the replica's environment):
# Ray's vLLM engine with its tokenization server found (engine.py says why).
ENGINE_CLASS_ENV = "RAYLLM_VLLM_ENGINE_CLS"
ENGINE_CLASS = "gemma_fleet.deployments.engines.vllm.engine.GemmaVllmEngine"
# Keys Ray Serve LLM computes itself from placement_group_config and refuses to be given.
_RESERVED_DEPLOYMENT_KEYS = ("placement_group_bundles", "placement_group_strategy")


def gpu_pool_resource(node_pool: str) -> str:
    """The custom Ray resource a GPU node of `node_pool` advertises (one unit per GPU)."""
    return f"{GPU_POOL_RESOURCE_PREFIX}{node_pool}"


def gpu_placement(tensor_parallel_size: int, node_pool: str) -> dict[str, Any]:
    """Placement for a GPU replica: one GPU per TP rank, all on one node of `node_pool`."""
    if tensor_parallel_size < 1:
        raise VllmSettingsError(f"tensor_parallel_size must be >= 1, got {tensor_parallel_size}")
    bundle = {"GPU": 1, gpu_pool_resource(node_pool): 1}
    return {
        "bundles": [dict(bundle) for _ in range(tensor_parallel_size)],
        "strategy": "STRICT_PACK",
    }


def cpu_placement(cpus: int = 1) -> dict[str, Any]:
    """Placement for a replica of vLLM's CPU build: one CPU-only bundle on one node."""
    if cpus < 1:
        raise VllmSettingsError(f"a CPU bundle needs at least one CPU, got {cpus}")
    return {"bundles": [{"CPU": cpus}], "strategy": "STRICT_PACK"}


def _has_gpu(placement_group_config: dict[str, Any]) -> bool:
    bundles = list(placement_group_config.get("bundles") or [])
    if placement_group_config.get("bundle_per_worker"):
        bundles.append(placement_group_config["bundle_per_worker"])
    return any(float(b.get("GPU", 0)) > 0 for b in bundles)


def build_llm_config(
    spec: VllmEngineSpec,
    *,
    deployment_config: dict[str, Any] | None = None,
    placement_group_config: dict[str, Any] | None = None,
    runtime_env: dict[str, Any] | None = None,
) -> LLMConfig:
    """The `LLMConfig` of one pool: `spec`'s engine settings, deployment and placement as given.

    `placement_group_config` defaults to `cpu_placement()` on a CPU host; GPU pools must pass
    one (usually `gpu_placement(tp, node_pool)`), whose bundles must match the TP degree.
    `runtime_env` is merged with the environment the engine itself needs.
    """
    from ray.serve.llm import LLMConfig

    from gemma_fleet.deployments.engines.server import PoolServer

    deployment = copy.deepcopy(deployment_config or {})
    reserved = [k for k in _RESERVED_DEPLOYMENT_KEYS if k in deployment]
    if reserved:
        raise VllmSettingsError(
            f"deployment_config must not set {', '.join(reserved)}: pass placement_group_config"
        )
    if placement_group_config is None:
        if not spec.cpu_host:
            raise VllmSettingsError(
                "a GPU pool needs placement_group_config, e.g. gpu_placement(tp, node_pool)"
            )
        placement_group_config = cpu_placement()
    placement = copy.deepcopy(placement_group_config)
    if _has_gpu(placement) == spec.cpu_host:
        kind = "CPU host" if spec.cpu_host else "GPU pool"
        raise VllmSettingsError(f"placement {placement} does not fit a {kind}")
    bundles = placement.get("bundles")
    if not spec.cpu_host and bundles is not None and len(bundles) != spec.tensor_parallel_size:
        raise VllmSettingsError(
            f"{len(bundles)} GPU bundles for tensor_parallel_size {spec.tensor_parallel_size}: "
            "vLLM places one TP rank per bundle"
        )
    env = copy.deepcopy(runtime_env or {})
    env["env_vars"] = {ENGINE_CLASS_ENV: ENGINE_CLASS, **spec.env_vars(), **env.get("env_vars", {})}
    return LLMConfig(
        model_loading_config={
            "model_id": spec.served_model_name,
            "model_source": spec.model_source,
        },
        engine_kwargs=spec.engine_kwargs(),
        accelerator_config={"kind": "cpu" if spec.cpu_host else "gpu"},
        placement_group_config=placement,
        deployment_config=deployment,
        runtime_env=env,
        server_cls=PoolServer,
    )
