"""A small byte-level BPE tokenizer with Gemma 4's control tokens, trained offline.

Real Gemma 4 tokenizers are 262k-entry SentencePiece models that only a model hub serves. The
tiny checkpoints need the same *control* vocabulary (turn, tool, channel, media tokens) so that
vLLM's Gemma 4 processor, chat template handling and `gemma4` parsers find what they look for;
the ordinary vocabulary can be anything. It is trained here from a fixed corpus held in this
module, so the same ids come out on every machine.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Ids 0-2 match Gemma's (pad 0, eos 1, bos 2); the rest follow in this order.
CONTROL_TOKENS: tuple[str, ...] = (
    "<pad>",
    "<eos>",
    "<bos>",
    "<unk>",
    "<mask>",
    "<|turn>",
    "<turn|>",
    "<|think|>",
    "<|channel>",
    "<channel|>",
    "<|tool>",
    "<tool|>",
    "<|tool_call>",
    "<tool_call|>",
    "<|tool_response>",
    "<tool_response|>",
    '<|"|>',
    "<|image>",
    "<image|>",
    "<|image|>",
    "<|audio>",
    "<audio|>",
    "<|audio|>",
    "<|video|>",
)
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2
END_OF_TURN = "<turn|>"
# Named media tokens the Gemma 4 processor reads from its tokenizer (image/audio expansion).
MEDIA_TOKENS: dict[str, str] = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "video_token": "<|video|>",
}
TARGET_VOCAB = 2048

# Training text: enough variety for a few hundred merges over English, code and JSON-ish
# tool arguments. Fixed here (not read from the system) so the vocabulary never drifts.
_CORPUS = """
The quick brown fox jumps over the lazy dog. A fleet of models serves requests from many teams.
Each request names a model, a list of messages, and perhaps tools, images or audio clips.
The gateway checks the key, counts tokens against the team's quota, and routes the request to
a pool that can serve it: audio goes to the small models, long context to the large ones.
What is the weather in Paris today? It is sunny and warm, about twenty degrees.
Please summarise this document in three sentences, then list the key figures as a table.
Describe the image. Transcribe the audio. Translate the text into French, German and Spanish.
Hello! How can I help you today? Thank you, that was helpful. Goodbye and have a nice day.
def get_weather(city: str, unit: str = "celsius") -> dict:
    return {"city": city, "temperature": 21, "unit": unit, "sky": "clear"}
class Pool:
    def __init__(self, name, replicas=1):
        self.name = name
        self.replicas = replicas
for i in range(10):
    print(i, i * i, "squares")
{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
{"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
 "required": ["city"]}
call:get_weather{city:Paris,unit:celsius} response:get_weather{value:sunny}
declaration:lookup{description:Look up an item,parameters:{type:OBJECT}}
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 256 512 1024 2048 4096 3.14 2.71 -1 +1 1e-6.
Tokens per second, time to first token, requests per minute, memory in gigabytes.
The model thinks first, then answers. The answer is short, correct and friendly.
"""


def training_corpus() -> list[str]:
    """The fixed training text plus this package's chat template (its keywords become merges)."""
    template = resources.files(__package__).joinpath("chat_template.jinja").read_text()
    return [*_CORPUS.strip().splitlines(), *template.splitlines()]


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of one token (transformers types the lookup as int or list)."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise TypeError(f"{token!r} maps to {found!r}, not one id")
    return found


def build_tokenizer(chat_template: str) -> PreTrainedTokenizerFast:
    """Train the BPE and wrap it as a `transformers` fast tokenizer carrying `chat_template`."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TARGET_VOCAB,
        special_tokens=list(CONTROL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_corpus(), trainer=trainer)
    fast_tokenizer: Any = PreTrainedTokenizerFast  # untyped constructor in transformers
    tokenizer: PreTrainedTokenizerFast = fast_tokenizer(
        tokenizer_object=bpe,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        extra_special_tokens=dict(MEDIA_TOKENS),
    )
    tokenizer.chat_template = chat_template
    tokenizer.padding_side = "left"
    for position, token in enumerate(CONTROL_TOKENS):
        if token_id(tokenizer, token) != position:
            raise RuntimeError(f"control token {token!r} did not get id {position}")
    return tokenizer
