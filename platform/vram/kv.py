"""KV-cache bytes of a Gemma 4 size, per token and per sequence.

Three kinds of layer, three behaviours (vLLM >= 0.21 allocates them this way):
- full-attention layers grow with the context: 2 (K and V, also when `attention_k_eq_v`, since
  vLLM stores both) x global KV heads x global head dim x dtype bytes per token;
- sliding-window layers hold at most the window: vLLM's sliding-window manager keeps the blocks
  that cover the last `sliding_window` tokens plus the block being written;
- KV-shared layers (the last `num_kv_shared_layers` of E2B/E4B) read earlier layers' cache and
  hold nothing.
Memory is allocated in blocks of `BLOCK_SIZE` tokens, so a sequence's tokens round up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gemma_fleet.catalog import TextArch

BLOCK_SIZE = 16  # vLLM's default KV block size on GPUs


class KvDtype(StrEnum):
    BF16 = "bf16"
    FP8 = "fp8"

    @property
    def bytes(self) -> int:
        return 2 if self is KvDtype.BF16 else 1


def blocks(tokens: int) -> int:
    return -(-tokens // BLOCK_SIZE)


@dataclass(frozen=True)
class KvShape:
    """KV bytes of the whole model (all tensor-parallel ranks together)."""

    full_bytes_per_token: int  # growth per token across every full-attention layer
    sliding_bytes_per_token: int  # per token across every sliding layer, up to the window
    sliding_window: int
    full_layers: int
    sliding_layers: int
    shared_layers: int

    def sliding_tokens_held(self, tokens: int) -> int:
        """Tokens a sliding layer keeps for a sequence of `tokens` (whole blocks)."""
        return min(blocks(tokens), blocks(self.sliding_window) + 1) * BLOCK_SIZE

    def bytes_per_sequence(self, tokens: int) -> int:
        """Bytes one sequence of `tokens` tokens holds across all layers."""
        full = blocks(tokens) * BLOCK_SIZE * self.full_bytes_per_token
        return full + self.sliding_tokens_held(tokens) * self.sliding_bytes_per_token


def kv_shape(text: TextArch, dtype: KvDtype) -> KvShape:
    full = sliding = shared = 0
    full_bytes = sliding_bytes = 0
    for layer in range(text.num_hidden_layers):
        if text.is_kv_shared(layer):
            shared += 1
        elif text.is_full_attention(layer):
            full += 1
            full_bytes += 2 * text.num_global_key_value_heads * text.global_head_dim * dtype.bytes
        else:
            sliding += 1
            sliding_bytes += 2 * text.num_key_value_heads * text.head_dim * dtype.bytes
    return KvShape(
        full_bytes_per_token=full_bytes,
        sliding_bytes_per_token=sliding_bytes,
        sliding_window=text.sliding_window,
        full_layers=full,
        sliding_layers=sliding,
        shared_layers=shared,
    )
