"""A deterministic pseudo-tokenizer: token counts and ids without any model files.

No real Gemma 4 tokenizer is available for the large checkpoints on machines without model
files, so the simulator estimates. Text splits like a SentencePiece vocabulary would: words
with their leading space cost one token per 8 characters (a 262k vocabulary holds most English
words whole), every digit is its own token (Gemma splits numbers into digits), and punctuation
and whitespace runs cost one token per 4 characters. English prose comes out at about 4
characters per token, the usual rule of thumb; JSON and code at about 2.5. Token ids are a stable
hash of each piece, so equal text gives equal ids (what prefix caching needs) in every process
and every run.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

WORD_CHARS_PER_TOKEN = 8
OTHER_CHARS_PER_TOKEN = 4
VOCAB_SIZE = 262_144  # Gemma 4's vocabulary (catalog family.vocab_size)
FIRST_TEXT_ID = 1_024  # ids below are left to special tokens (bos=2, eos=1, turn markers...)
BOS_ID = 2
TURN_START_ID = 105  # Gemma's <start_of_turn>-style marker
TURN_END_ID = 106  # also an EOS id of Gemma 4 (family.eos_token_ids)

_PIECE = re.compile(r" ?[A-Za-z_]+| ?[0-9]| ?[^\sA-Za-z0-9_]+|\s+")


def _width(piece: str) -> int:
    return (
        WORD_CHARS_PER_TOKEN if piece[-1].isalpha() or piece[-1] == "_" else OTHER_CHARS_PER_TOKEN
    )


@lru_cache(maxsize=1 << 16)
def _chunk_id(chunk: str) -> int:
    digest = hashlib.blake2b(chunk.encode(), digest_size=8).digest()
    return FIRST_TEXT_ID + int.from_bytes(digest, "little") % (VOCAB_SIZE - FIRST_TEXT_ID)


def pieces(text: str) -> list[str]:
    """Split `text` into token-sized pieces whose concatenation is `text` exactly."""
    out: list[str] = []
    for match in _PIECE.finditer(text):
        word = match.group()
        width = _width(word)
        out.extend(word[i : i + width] for i in range(0, len(word), width))
    return out


def encode(text: str) -> list[int]:
    """Token ids of `text` (deterministic across processes)."""
    return [_chunk_id(p) for p in pieces(text)]


def count(text: str) -> int:
    """Number of tokens `encode(text)` returns, without hashing."""
    total = 0
    for match in _PIECE.finditer(text):
        word = match.group()
        total += -(-len(word) // _width(word))
    return total


def token_id(piece: str) -> int:
    """The id of one piece returned by `pieces`."""
    return _chunk_id(piece)


def placeholder_ids(key: str, n: int) -> list[int]:
    """`n` ids standing for a multimodal item (image, audio, video) identified by `key`: distinct
    items get distinct ids, so prefix caching never confuses two images."""
    base = _chunk_id("\x00mm:" + key)
    return [
        FIRST_TEXT_ID + (base - FIRST_TEXT_ID + i) % (VOCAB_SIZE - FIRST_TEXT_ID) for i in range(n)
    ]


# What the special ids read as when a prompt of token ids is echoed (Gemma's names).
SPECIAL_TEXT = {
    0: "<pad>",
    1: "<eos>",
    BOS_ID: "<bos>",
    TURN_START_ID: "<start_of_turn>",
    TURN_END_ID: "<end_of_turn>",
}
_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo")


@lru_cache(maxsize=1 << 16)
def decode_id(token: int) -> str:
    """The text of one token id, for echoing a prompt given as ids. Ids are hashes of text
    (`encode`), so they cannot be read back: an id stands for a pseudo-word made from its own
    digits (" kaloti"), the same in every process; special ids read as Gemma names them, and
    other ids below FIRST_TEXT_ID as "<unusedN>"."""
    if token in SPECIAL_TEXT:
        return SPECIAL_TEXT[token]
    if token < FIRST_TEXT_ID:
        return f"<unused{token}>"
    word = []
    rest = token
    for _ in range(3):
        rest, digit = divmod(rest, len(_SYLLABLES))
        word.append(_SYLLABLES[digit])
    return " " + "".join(word)
