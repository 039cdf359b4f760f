"""Tiny random-weight Gemma 4 checkpoints, built offline, for running real vLLM without a GPU."""

from gemma_fleet.deployments.checkpoints.build import (
    IMITATES,
    BuildInfo,
    Variant,
    build_tiny_checkpoint,
    chat_template,
    default_checkpoint_root,
    ensure_tiny_checkpoint,
    read_build_info,
    real_size_text_config,
)

__all__ = [
    "IMITATES",
    "BuildInfo",
    "Variant",
    "build_tiny_checkpoint",
    "chat_template",
    "default_checkpoint_root",
    "ensure_tiny_checkpoint",
    "read_build_info",
    "real_size_text_config",
]
