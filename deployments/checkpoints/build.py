"""Build tiny random-weight Gemma 4 checkpoints that real vLLM can load, offline, in seconds.

Each variant keeps the architectural traits of one real size (read from the catalog) at toy
dimensions, so vLLM runs the same Gemma 4 code paths it runs for the real model:

- ``text``: dense decoder like gemma-4-31B (full-attention layers with K reused as V).
- ``moe``: gemma-4-26B-A4B's mixture-of-experts block beside the dense MLP, K reused as V.
- ``kv-shared``: gemma-4-E2B's per-layer inputs, KV-shared last layers and double-wide MLP.
- ``multimodal``: ``Gemma4ForConditionalGeneration`` with E4B-like text plus vision and audio
  towers, and a ``Gemma4Processor`` (image, audio and video placeholders).

Weights are random (seeded); the outputs are gibberish by design. What is real is everything
around them: config, tokenizer, chat template, processor and the engine that serves them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from gemma_fleet.catalog import ModelSpec, load_catalog
from gemma_fleet.deployments.checkpoints.tokenizer import (
    BOS_ID,
    END_OF_TURN,
    EOS_ID,
    MEDIA_TOKENS,
    PAD_ID,
    build_tokenizer,
    token_id,
)

# Bump when the output of a build changes, so cached checkpoints are rebuilt.
BUILDER_VERSION = 1
BUILD_INFO = "gemma-fleet-checkpoint.json"
DEFAULT_SEED = 0
# The smallest image budget Gemma 4 offers (soft tokens per image): keeps prompts short.
IMAGE_SOFT_TOKENS = 70


class Variant(StrEnum):
    TEXT = "text"
    MOE = "moe"
    KV_SHARED = "kv-shared"
    MULTIMODAL = "multimodal"


# Which real size each variant imitates: its structural flags come from the catalog.
IMITATES: dict[Variant, str] = {
    Variant.TEXT: "gemma-4-31B",
    Variant.MOE: "gemma-4-26B-A4B",
    Variant.KV_SHARED: "gemma-4-E2B",
    Variant.MULTIMODAL: "gemma-4-E4B",
}


@dataclass(frozen=True)
class BuildInfo:
    """What was built: written last into the checkpoint, so it also marks a finished build."""

    variant: str
    imitates: str
    seed: int
    builder_version: int
    architecture: str
    parameters: int
    vocab_size: int

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def chat_template() -> str:
    """The Gemma 4 chat template shipped with the checkpoints."""
    return resources.files(__package__).joinpath("chat_template.jinja").read_text()


def _text_config(spec: ModelSpec, vocab_size: int, eos_ids: list[int]) -> Any:
    from transformers import Gemma4TextConfig

    arch = spec.text
    kv_shared = arch.num_kv_shared_layers > 0
    # Four layers when some share KV (two own it, two reuse it), else one sliding + one full.
    layer_types = ["sliding_attention", "full_attention"] * (2 if kv_shared else 1)
    per_layer_input = 16 if arch.hidden_size_per_layer_input > 0 else 0
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=len(layer_types),
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        global_head_dim=128,
        num_global_key_value_heads=1,
        layer_types=layer_types,
        sliding_window=64,
        max_position_embeddings=4096,
        vocab_size_per_layer_input=vocab_size,
        hidden_size_per_layer_input=per_layer_input,
        num_kv_shared_layers=2 if kv_shared else 0,
        use_double_wide_mlp=arch.use_double_wide_mlp,
        attention_k_eq_v=arch.attention_k_eq_v,
        final_logit_softcapping=load_catalog().family.final_logit_softcapping,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=eos_ids,
    )
    if arch.moe is not None:
        kwargs.update(
            enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=64
        )
    return Gemma4TextConfig(**kwargs)


def real_size_text_config(spec: ModelSpec, vocab_size: int) -> dict[str, Any]:
    """`Gemma4TextConfig` arguments for the published size `spec` describes, from the catalog
    alone (JSON-ready). Used to check the VRAM model against transformers' own modules and to
    build random-weight models of the real shapes for GPU measurements; no checkpoint is read."""
    arch = spec.text
    layer_types = [
        "full_attention" if arch.is_full_attention(i) else "sliding_attention"
        for i in range(arch.num_hidden_layers)
    ]
    kwargs: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_hidden_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_key_value_heads,
        head_dim=arch.head_dim,
        global_head_dim=arch.global_head_dim,
        num_global_key_value_heads=arch.num_global_key_value_heads,
        layer_types=layer_types,
        sliding_window=arch.sliding_window,
        vocab_size_per_layer_input=vocab_size,
        hidden_size_per_layer_input=arch.hidden_size_per_layer_input,
        num_kv_shared_layers=arch.num_kv_shared_layers,
        use_double_wide_mlp=arch.use_double_wide_mlp,
        attention_k_eq_v=arch.attention_k_eq_v,
        tie_word_embeddings=True,
    )
    if arch.moe is not None:
        kwargs.update(
            enable_moe_block=True,
            num_experts=arch.moe.num_experts,
            top_k_experts=arch.moe.top_k,
            moe_intermediate_size=arch.moe.moe_intermediate_size,
        )
    return kwargs


def _text_model(spec: ModelSpec, vocab_size: int, eos_ids: list[int]) -> Any:
    from transformers import Gemma4ForCausalLM

    config = _text_config(spec, vocab_size, eos_ids)
    config.architectures = ["Gemma4ForCausalLM"]
    return Gemma4ForCausalLM(config)


def _multimodal_model(
    out: Path, spec: ModelSpec, tokenizer: Any, vocab_size: int, eos_ids: list[int]
) -> Any:
    """The multimodal model (E-series text, vision and audio towers); writes its processor
    configs into `out` as a side effect, since they must agree with the model's token ids."""
    from transformers import (
        Gemma4AudioConfig,
        Gemma4AudioFeatureExtractor,
        Gemma4Config,
        Gemma4ForConditionalGeneration,
        Gemma4ImageProcessorPil,
        Gemma4Processor,
        Gemma4VideoProcessor,
        Gemma4VisionConfig,
    )

    ids = {name: token_id(tokenizer, tok) for name, tok in MEDIA_TOKENS.items()}
    vision = Gemma4VisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        patch_size=16,
        pooling_kernel_size=3,
        position_embedding_size=1024,
    )
    # Real checkpoints carry this key and vLLM's Gemma 4 image path reads it.
    vision.default_output_length = IMAGE_SOFT_TOKENS
    audio = Gemma4AudioConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        # The first entry is the number of mel bins (128): HF and vLLM use it as the
        # frequency dimension, so it cannot shrink with the rest.
        subsampling_conv_channels=[128, 8],
        output_proj_dims=64,
    )
    config = Gemma4Config(
        text_config=_text_config(spec, vocab_size, eos_ids),
        vision_config=vision,
        audio_config=audio,
        boi_token_id=ids["boi_token"],
        eoi_token_id=ids["eoi_token"],
        image_token_id=ids["image_token"],
        video_token_id=ids["video_token"],
        boa_token_id=ids["boa_token"],
        eoa_token_index=ids["eoa_token"],
        audio_token_id=ids["audio_token"],
        tie_word_embeddings=True,
    )
    config.architectures = ["Gemma4ForConditionalGeneration"]
    model = Gemma4ForConditionalGeneration(config)
    # The processor is saved beside the model: vLLM loads it to expand image/audio placeholders.
    processor = Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessorPil(
            max_soft_tokens=IMAGE_SOFT_TOKENS, patch_size=16, pooling_kernel_size=3
        ),
        tokenizer=tokenizer,
        video_processor=Gemma4VideoProcessor(),
        chat_template=chat_template(),
        image_seq_length=IMAGE_SOFT_TOKENS,
    )
    processor.save_pretrained(out)
    return model


def build_tiny_checkpoint(
    out_dir: Path | str, variant: Variant | str, seed: int = DEFAULT_SEED
) -> Path:
    """Write a tiny random-weight Gemma 4 checkpoint of `variant` into `out_dir`.

    The directory gets config.json, bf16 safetensors, tokenizer files with the Gemma 4 chat
    template, generation_config.json and (multimodal) the processor configs; the same `seed`
    gives the same bytes of weights. Returns `out_dir`. Overwrites files already there.
    """
    import torch
    from transformers import GenerationConfig

    variant = Variant(variant)
    spec = load_catalog().model(IMITATES[variant])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(chat_template())
    vocab_size = len(tokenizer)
    eos_ids = [EOS_ID, token_id(tokenizer, END_OF_TURN)]
    torch.manual_seed(seed)
    if variant is Variant.MULTIMODAL:
        model = _multimodal_model(out, spec, tokenizer, vocab_size, eos_ids)
    else:
        model = _text_model(spec, vocab_size, eos_ids)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    generation_config: Any = GenerationConfig  # untyped constructor in transformers
    generation_config(
        bos_token_id=BOS_ID, eos_token_id=eos_ids, pad_token_id=PAD_ID, do_sample=False
    ).save_pretrained(out)
    info = BuildInfo(
        variant=variant.value,
        imitates=spec.name,
        seed=seed,
        builder_version=BUILDER_VERSION,
        architecture=model.config.architectures[0],
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=vocab_size,
    )
    (out / BUILD_INFO).write_text(info.to_json())
    return out


def read_build_info(path: Path) -> BuildInfo | None:
    """The build record of a checkpoint directory, or None when it is absent or unreadable."""
    try:
        return BuildInfo(**json.loads((path / BUILD_INFO).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def default_checkpoint_root() -> Path:
    """Where cached checkpoints live: $GEMMA_FLEET_CHECKPOINTS, else ~/.cache/gemma-fleet."""
    env = os.environ.get("GEMMA_FLEET_CHECKPOINTS")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "gemma-fleet" / "checkpoints"


def ensure_tiny_checkpoint(
    variant: Variant | str, root: Path | str | None = None, seed: int = DEFAULT_SEED
) -> Path:
    """The checkpoint of `variant` under `root`, built on first use and reused afterwards.

    Safe to call repeatedly and from concurrent processes: a file lock serialises builders,
    the build goes to a temporary directory and is renamed into place only when complete,
    and a checkpoint from another builder version or seed is rebuilt.
    """
    import fcntl

    variant = Variant(variant)
    base = Path(root) if root is not None else default_checkpoint_root()
    base.mkdir(parents=True, exist_ok=True)
    target = base / f"tiny-gemma4-{variant.value}"
    if _is_current(target, variant, seed):
        return target
    with open(base / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(target, variant, seed):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=base))
        try:
            build_tiny_checkpoint(staging, variant, seed)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _is_current(path: Path, variant: Variant, seed: int) -> bool:
    info = read_build_info(path)
    return (
        info is not None
        and info.variant == variant.value
        and info.seed == seed
        and info.builder_version == BUILDER_VERSION
    )
