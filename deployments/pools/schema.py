"""Typed shape of a fleet file: GPU node pools and the model pools placed on them.

Every model is strict about unknown keys, so a typo (`max_replica`, `tp_size`) fails at load
with the field's path instead of being silently ignored. Checks that need the catalog, the VRAM
profile or several pools at once live in `validate.py`.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gemma_fleet.vram import DEFAULT_MAX_MODEL_LEN, KvDtype

# A model pool's name is its Ray Serve deployment name and its served model id, so it keeps to
# characters both accept and that survive URLs and metric labels.
PoolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
# Seconds a replica being removed keeps answering what it has accepted: the official OpenAI and
# Anthropic Python SDKs' default request timeout, so nothing a default client still waits for is
# cut by a scale-down. A draining replica holds its GPUs until its last answer ends.
DEFAULT_DRAIN_TIMEOUT_S = 600.0
# A node pool's name becomes a Ray resource (gpu_pool_<name>) and a KubeRay worker-group name,
# so it follows Kubernetes' DNS-label rule.
NodePoolName = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineKind(StrEnum):
    SIMULATOR = "simulator"
    VLLM = "vllm"


class NodePool(Strict):
    """A group of identical GPU nodes (a KubeRay worker group, a cloud node pool)."""

    name: NodePoolName
    gpu: str = Field(description="catalog GPU name, e.g. H100-80GB")
    gpus_per_node: int = Field(ge=1, le=16)
    min_nodes: int = Field(0, ge=0)
    max_nodes: int = Field(ge=1)
    cost_per_gpu_hour: float = Field(ge=0, description="what one GPU-hour costs, any currency")
    spot: bool = False

    @model_validator(mode="after")
    def _min_within_max(self) -> NodePool:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"min_nodes {self.min_nodes} exceeds max_nodes {self.max_nodes}")
        return self

    @property
    def resource(self) -> str:
        """The custom Ray resource every node of this pool declares, one unit per GPU."""
        return f"gpu_pool_{self.name}"


class Replicas(Strict):
    """Replica bounds of a model pool; `initial` is what starts before any scaling decision."""

    min: int = Field(1, ge=0)
    max: int = Field(1, ge=1)
    initial: int | None = Field(None, ge=0, description="defaults to min")

    @model_validator(mode="after")
    def _ordered(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min {self.min} exceeds max {self.max}")
        if self.initial is not None and not self.min <= self.initial <= self.max:
            raise ValueError(f"initial {self.initial} must lie within [{self.min}, {self.max}]")
        return self

    @property
    def start(self) -> int:
        return self.min if self.initial is None else self.initial


class SimulatorOptions(Strict):
    """Options only the simulator engine reads."""

    speedup: float = Field(1.0, gt=0, description="simulated seconds per wall-clock second")
    seed: int = 0
    # Natural answer length in tokens, drawn per request (then capped by its max_tokens): shapes
    # how long requests stay in flight, e.g. to resemble a team's traffic in a load test.
    answer_tokens_min: int = Field(16, ge=1)
    answer_tokens_max: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _answer_range(self) -> SimulatorOptions:
        if self.answer_tokens_min > self.answer_tokens_max:
            raise ValueError(
                f"answer_tokens_min {self.answer_tokens_min} exceeds "
                f"answer_tokens_max {self.answer_tokens_max}"
            )
        return self


class ModelPool(Strict):
    """Replicas of one Gemma 4 configuration on one node pool, served under one model id."""

    name: PoolName
    model: str = Field(description="catalog model name, e.g. gemma-4-31B")
    quant: str = "bf16"
    max_model_len: int = Field(DEFAULT_MAX_MODEL_LEN, ge=1)
    kv_dtype: KvDtype = KvDtype.BF16
    tp: int = Field(1, ge=1)
    node_pool: str
    replicas: Replicas = Replicas()
    engine: EngineKind = EngineKind.SIMULATOR
    text_only: bool = False
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int = Field(256, ge=1)
    max_num_batched_tokens: int = Field(8192, ge=1)
    enable_prefix_caching: bool = True
    drain_timeout_s: float = Field(
        DEFAULT_DRAIN_TIMEOUT_S,
        gt=0,
        description="seconds a replica being removed keeps answering the requests it has",
    )
    checkpoint: str | None = Field(
        None, description="vLLM: local path or Hugging Face id; default: the catalog's hf_id"
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments passed through unchanged"
    )
    simulator: SimulatorOptions = SimulatorOptions()


class MediaOptions(Strict):
    """Limits on media the gateway fetches for a request (http(s) image, video and PDF URLs;
    docs/gateway.md, "Remote media")."""

    max_bytes: int = Field(20 * 2**20, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    max_redirects: int = Field(3, ge=0)
    allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDRs fetched even though private (an internal media server)",
    )

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, networks: list[str]) -> list[str]:
        for network in networks:
            try:
                ipaddress.ip_network(network)
            except ValueError as exc:
                raise ValueError(f"{network!r} is not a network such as 10.20.0.0/16") from exc
        return networks


class GatewayOptions(Strict):
    """The gateway's settings an operator chooses (a fleet file's `gateway:` section); the
    pools it routes to come from the rest of the file. The PDF defaults are those of
    gateway/pdf_process.py (a test holds them equal)."""

    max_body_bytes: int = Field(25 * 2**20, ge=1024, description="413 above this")
    body_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="408 when a request body takes longer to arrive"
    )
    media: MediaOptions = MediaOptions()
    pdf_read_timeout_s: float = Field(
        30.0,
        gt=0,
        le=600,
        description="400 when reading one PDF takes longer (its reader process is killed)",
    )
    pdf_reader_memory_mib: int = Field(
        2048,
        ge=256,
        le=1 << 20,
        description="address space of a PDF reader process; a PDF that needs more is a 400",
    )
    pdf_readers: int = Field(
        1, ge=1, le=64, description="PDF reader processes per replica, each reading one PDF"
    )


class FleetSpec(Strict):
    """A whole fleet file. Lists (not mappings) keep pool order and let duplicate names be
    reported: YAML silently keeps the last of two equal mapping keys."""

    node_pools: list[NodePool] = Field(min_length=1)
    model_pools: list[ModelPool] = Field(min_length=1)
    aliases: dict[PoolName, list[str]] = Field(
        default_factory=dict,
        description="served model ids that let the gateway choose among the listed pools",
    )
    gateway: GatewayOptions = Field(
        default_factory=GatewayOptions,
        description="request limits, remote media and PDF readers (docs/gateway.md)",
    )

    def node_pool(self, name: str) -> NodePool:
        """The node pool called `name` (KeyError when there is none)."""
        for pool in self.node_pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def model_pool(self, name: str) -> ModelPool:
        """The model pool called `name` (KeyError when there is none)."""
        for pool in self.model_pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    @property
    def longest_drain_s(self) -> float:
        """The longest `drain_timeout_s` of the model pools: how long a stopping gateway, which
        carries answers from every pool, keeps answering."""
        return max(p.drain_timeout_s for p in self.model_pools)
