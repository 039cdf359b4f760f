"""The simulated KV cache: a byte budget from the VRAM profile, allocated in blocks, with prefix
caching by chained block hashes and LRU eviction of unreferenced cached blocks.

Representation (what makes "KV capacity equals the VRAM profile's" an exact statement):
- the budget is `kv_free_bytes_per_gpu * tp` bytes, the profile's KV memory over all ranks;
- there are two groups of blocks, as in vLLM's hybrid KV-cache manager: a full-attention block
  holds BLOCK_SIZE tokens of every full-attention layer (BLOCK_SIZE * full_bytes_per_token
  bytes); a sliding-window block holds BLOCK_SIZE tokens of every sliding layer
  (BLOCK_SIZE * sliding_bytes_per_token bytes); KV-shared layers hold nothing (KvShape);
- a sequence of t tokens holds blocks(t) full blocks and the last min(blocks(t),
  blocks(window) + 1) sliding blocks (vLLM frees blocks that slid out of the window), i.e.
  exactly `KvShape.bytes_per_sequence(t)` bytes;
- so the pool holds exactly `profile.max_concurrent_sequences` sequences of max_model_len, and
  its token capacity, defined like the profile's, equals `profile.kv_capacity_tokens`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import IntEnum

from gemma_fleet.vram import BLOCK_SIZE, KvShape, VramProfile


class KvGroup(IntEnum):
    FULL = 0
    SLIDING = 1


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(eq=False)
class Block:
    """One block of one group. `block_hash` is set once the block's tokens are all computed."""

    group: KvGroup
    index: int  # position of the block in its sequence
    block_hash: bytes | None = None
    ref_cnt: int = 0


@dataclass
class SequenceKv:
    """Blocks one request holds. `num_blocks` counts logical blocks (full group length)."""

    full: list[Block] = field(default_factory=list)
    sliding: deque[Block] = field(default_factory=deque)
    num_blocks: int = 0
    committed: int = 0  # blocks [0, committed) are named by their hashes


@dataclass(frozen=True)
class PrefixHit:
    """A prefix-cache hit: `num_blocks` whole blocks whose KV is already resident."""

    num_blocks: int
    full: tuple[Block, ...] = ()
    sliding: tuple[Block, ...] = ()

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * BLOCK_SIZE


NO_HIT = PrefixHit(0)


def block_hashes(token_ids: list[int], start: list[bytes] | None = None) -> list[bytes]:
    """Chained hashes of every full block of `token_ids`: hash(previous hash, block tokens), so a
    block's hash names its whole prefix. `start` holds hashes already computed (extended)."""
    hashes = list(start or [])
    prev = hashes[-1] if hashes else b""
    for i in range(len(hashes), len(token_ids) // BLOCK_SIZE):
        chunk = token_ids[i * BLOCK_SIZE : (i + 1) * BLOCK_SIZE]
        h = hashlib.blake2b(prev + b"|" + ",".join(map(str, chunk)).encode(), digest_size=16)
        prev = h.digest()
        hashes.append(prev)
    return hashes


class KvPool:
    """Byte-budgeted block pool with prefix caching (see the module docstring)."""

    def __init__(
        self,
        kv: KvShape,
        budget_bytes: int,
        max_model_len: int,
        *,
        enable_prefix_caching: bool = True,
    ) -> None:
        self.kv = kv
        self.budget_bytes = budget_bytes
        self.max_model_len = max_model_len
        self.enable_prefix_caching = enable_prefix_caching
        self.block_bytes = (
            BLOCK_SIZE * kv.full_bytes_per_token,
            BLOCK_SIZE * kv.sliding_bytes_per_token,
        )
        # Sliding blocks a running sequence keeps (KvShape.sliding_tokens_held).
        self.sliding_blocks_held = cdiv(kv.sliding_window, BLOCK_SIZE) + 1
        # Contiguous cached sliding blocks a hit needs at its end (vLLM's SlidingWindowManager:
        # cdiv(sliding_window - 1, block_size)).
        self.sliding_blocks_for_hit = cdiv(kv.sliding_window - 1, BLOCK_SIZE)
        self.resident_bytes = 0  # every block in memory, referenced or cached
        self.referenced_bytes = 0  # blocks some running request holds
        self._cached: dict[tuple[KvGroup, bytes], Block] = {}
        self._evictable: OrderedDict[tuple[KvGroup, bytes], Block] = OrderedDict()
        self._evictable_bytes = 0
        self.evictions = 0

    @classmethod
    def from_profile(cls, profile: VramProfile, *, enable_prefix_caching: bool = True) -> KvPool:
        return cls(
            profile.kv,
            profile.kv_free_bytes_per_gpu * profile.tp,
            profile.max_model_len,
            enable_prefix_caching=enable_prefix_caching,
        )

    # ---- capacity -------------------------------------------------------------------------
    @property
    def bytes_per_max_sequence(self) -> int:
        return self.kv.bytes_per_sequence(self.max_model_len)

    @property
    def capacity_tokens(self) -> int:
        """Tokens held when every sequence is max_model_len long (the profile's definition)."""
        return self.budget_bytes * self.max_model_len // self.bytes_per_max_sequence

    @property
    def max_sequences(self) -> int:
        return self.budget_bytes // self.bytes_per_max_sequence

    @property
    def free_bytes(self) -> int:
        """Bytes an allocation may use: never-used bytes plus evictable cached blocks."""
        return self.budget_bytes - self.resident_bytes + self._evictable_bytes

    @property
    def usage(self) -> float:
        """Fraction of the budget held by running requests (vLLM's kv_cache_usage_perc counts
        cached-but-free blocks as free)."""
        return self.referenced_bytes / self.budget_bytes if self.budget_bytes else 1.0

    @property
    def cached_blocks(self) -> int:
        return len(self._cached)

    # ---- block bookkeeping ----------------------------------------------------------------
    def _bytes(self, group: KvGroup) -> int:
        return self.block_bytes[group]

    def _take_ref(self, block: Block) -> None:
        if block.ref_cnt == 0:
            self.referenced_bytes += self._bytes(block.group)
            if block.block_hash is not None:
                key = (block.group, block.block_hash)
                if self._evictable.pop(key, None) is not None:
                    self._evictable_bytes -= self._bytes(block.group)
        block.ref_cnt += 1

    def _drop_ref(self, block: Block) -> None:
        block.ref_cnt -= 1
        if block.ref_cnt > 0:
            return
        size = self._bytes(block.group)
        self.referenced_bytes -= size
        key = (block.group, block.block_hash) if block.block_hash is not None else None
        if key is not None and self._cached.get(key) is block:
            self._evictable[key] = block  # most recently used at the end
            self._evictable_bytes += size
        else:
            self.resident_bytes -= size

    def _new_block(self, group: KvGroup, index: int) -> Block:
        size = self._bytes(group)
        while self.budget_bytes - self.resident_bytes < size:
            key, victim = self._evictable.popitem(last=False)  # least recently used
            victim_size = self._bytes(victim.group)
            self._evictable_bytes -= victim_size
            self.resident_bytes -= victim_size
            del self._cached[key]
            self.evictions += 1
        self.resident_bytes += size
        block = Block(group, index)
        self._take_ref(block)
        return block

    # ---- sizing ----------------------------------------------------------------------------
    def _growth(self, seq: SequenceKv, num_tokens: int) -> tuple[int, int, int]:
        """(new full blocks, new sliding blocks, sliding blocks released) to hold num_tokens."""
        n0, n1 = seq.num_blocks, cdiv(num_tokens, BLOCK_SIZE)
        if n1 <= n0:
            return 0, 0, 0
        new_sliding = n1 - max(n0, n1 - self.sliding_blocks_held)
        keep_from = n1 - self.sliding_blocks_held
        released = sum(1 for b in seq.sliding if b.index < keep_from)
        return n1 - n0, new_sliding, released

    def bytes_to_grow(self, seq: SequenceKv, num_tokens: int) -> int:
        new_full, new_sliding, _ = self._growth(seq, num_tokens)
        return new_full * self.block_bytes[KvGroup.FULL] + new_sliding * self.block_bytes[1]

    def can_admit(self, hit: PrefixHit, num_tokens: int) -> bool:
        """Whether a waiting request (with `hit`) fits with all its `num_tokens` tokens
        (vLLM's scheduler_reserve_full_isl admission check)."""
        probe = SequenceKv(num_blocks=hit.num_blocks)
        probe.sliding.extend(hit.sliding)
        need = self.bytes_to_grow(probe, num_tokens)
        # Hit blocks that sit in the evictable LRU stop being free once referenced.
        need += sum(self._bytes(b.group) for b in (*hit.full, *hit.sliding) if b.ref_cnt == 0)
        return need <= self.free_bytes

    # ---- operations -----------------------------------------------------------------------
    def allocate(self, seq: SequenceKv, num_tokens: int) -> bool:
        """Grow `seq` to hold `num_tokens` tokens; False (and no change) when it cannot."""
        new_full, new_sliding, released = self._growth(seq, num_tokens)
        if new_full == 0 and new_sliding == 0:
            return True
        need = new_full * self.block_bytes[0] + new_sliding * self.block_bytes[1]
        if need > self.free_bytes + released * self.block_bytes[1]:
            return False
        n1 = seq.num_blocks + new_full
        keep_from = n1 - self.sliding_blocks_held
        while seq.sliding and seq.sliding[0].index < keep_from:
            self._drop_ref(seq.sliding.popleft())
        for index in range(seq.num_blocks, n1):
            if self.block_bytes[0]:
                seq.full.append(self._new_block(KvGroup.FULL, index))
            if self.block_bytes[1] and index >= keep_from:
                seq.sliding.append(self._new_block(KvGroup.SLIDING, index))
        seq.num_blocks = n1
        return True

    def free(self, seq: SequenceKv) -> None:
        """Release every block of `seq` (hashed blocks stay cached until evicted)."""
        for block in reversed(seq.full):  # tail first: evicted before the shared prefix
            self._drop_ref(block)
        for block in reversed(seq.sliding):
            self._drop_ref(block)
        seq.full.clear()
        seq.sliding.clear()
        seq.num_blocks = 0
        seq.committed = 0

    def commit(self, seq: SequenceKv, hashes: list[bytes], num_computed_tokens: int) -> None:
        """Name the blocks whose tokens are all computed by their hashes, so later requests
        with the same prefix can reuse them."""
        if not self.enable_prefix_caching:
            return
        full_blocks = min(num_computed_tokens // BLOCK_SIZE, len(hashes), seq.num_blocks)
        if full_blocks <= seq.committed:
            return
        for block in seq.full[seq.committed : full_blocks]:
            self._name(block, hashes[block.index])
        for block in seq.sliding:
            if seq.committed <= block.index < full_blocks:
                self._name(block, hashes[block.index])
        seq.committed = full_blocks

    def _name(self, block: Block, block_hash: bytes) -> None:
        if block.block_hash is not None:
            return
        block.block_hash = block_hash
        self._cached.setdefault((block.group, block_hash), block)

    def lookup(self, hashes: list[bytes], num_tokens: int) -> PrefixHit:
        """Longest cached prefix of a request with these block hashes. At least one token is
        always left to compute (vLLM recomputes the last token to get logits)."""
        if not self.enable_prefix_caching:
            return NO_HIT
        max_blocks = min(len(hashes), (num_tokens - 1) // BLOCK_SIZE)
        full: list[Block] = []
        if self.block_bytes[0]:
            for i in range(max_blocks):
                block = self._cached.get((KvGroup.FULL, hashes[i]))
                if block is None:
                    break
                full.append(block)
            max_blocks = len(full)
        if not self.block_bytes[1]:
            return PrefixHit(max_blocks, tuple(full)) if max_blocks else NO_HIT
        for j in range(max_blocks, 0, -1):
            window = range(max(0, j - self.sliding_blocks_for_hit), j)
            sliding = [self._cached.get((KvGroup.SLIDING, hashes[i])) for i in window]
            if all(b is not None for b in sliding):
                found = tuple(b for b in sliding if b is not None)
                return PrefixHit(j, tuple(full[:j]), found)
        return NO_HIT

    def acquire(self, seq: SequenceKv, hit: PrefixHit) -> None:
        """Make a fresh `seq` start from the cached prefix `hit`."""
        for block in hit.full:
            self._take_ref(block)
            seq.full.append(block)
        for block in hit.sliding:
            self._take_ref(block)
            seq.sliding.append(block)
        seq.num_blocks = hit.num_blocks
        seq.committed = hit.num_blocks

    def reset_prefix_cache(self) -> bool:
        """Drop every unreferenced cached block (vLLM refuses while blocks are in use: so do we
        for referenced ones, which simply stay)."""
        for key, block in list(self._evictable.items()):
            self._evictable.pop(key)
            self._cached.pop(key, None)
            size = self._bytes(block.group)
            self._evictable_bytes -= size
            self.resident_bytes -= size
        return True
