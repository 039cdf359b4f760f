"""Tiny Gemma 4 checkpoints: built offline, deterministic, cached, loadable by transformers, and
their chat template speaks the Gemma 4 format that vLLM's `gemma4` tool parser reads back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gemma_fleet.deployments.checkpoints import (
    IMITATES,
    Variant,
    build_tiny_checkpoint,
    ensure_tiny_checkpoint,
    read_build_info,
)

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City"},
                "days": {"type": "integer"},
            },
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def text_checkpoint(checkpoint_root: Path) -> Path:
    return ensure_tiny_checkpoint("text", checkpoint_root)


def _tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("variant", list(Variant))
def test_every_variant_builds_small_and_loads_in_transformers(
    variant: Variant, checkpoint_root: Path
) -> None:
    import torch
    from transformers import AutoConfig

    path = ensure_tiny_checkpoint(variant, checkpoint_root)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    assert size < 10e6, f"{variant} checkpoint is {size / 1e6:.1f} MB"
    info = read_build_info(path)
    assert info is not None and info.imitates == IMITATES[variant]
    config = AutoConfig.from_pretrained(path)
    text = getattr(config, "text_config", config)
    # The traits each variant exists for, as the loaded config reports them.
    if variant is Variant.TEXT:
        assert text.attention_k_eq_v and not text.enable_moe_block
    if variant is Variant.MOE:
        assert text.enable_moe_block and text.num_experts == 4
    if variant is Variant.KV_SHARED:
        assert text.num_kv_shared_layers == 2 and text.hidden_size_per_layer_input > 0
    if variant is Variant.MULTIMODAL:
        assert config.vision_config is not None and config.audio_config is not None
        assert (path / "processor_config.json").exists()
        return
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = _tokenizer(path)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True, return_tensors="pt"
    )["input_ids"]
    # transformers types generate()'s `self` as a Protocol (written for the `ty` checker) that
    # mypy finds the Auto classes' model does not satisfy. Of the union it is declared to return,
    # the token ids come back as a tensor (no return_dict_in_generate).
    out = model.generate(ids, max_new_tokens=4, do_sample=False)  # type: ignore[misc]
    assert isinstance(out, torch.Tensor)
    assert out.shape[1] > ids.shape[1]


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    a = build_tiny_checkpoint(tmp_path / "a", "moe", seed=0)
    b = build_tiny_checkpoint(tmp_path / "b", "moe", seed=0)
    c = build_tiny_checkpoint(tmp_path / "c", "moe", seed=1)
    weights = [(p / "model.safetensors").read_bytes() for p in (a, b, c)]
    assert weights[0] == weights[1]
    assert weights[0] != weights[2]
    assert (a / "tokenizer.json").read_bytes() == (c / "tokenizer.json").read_bytes()


def test_cached_checkpoint_is_built_once_and_rebuilt_when_stale(tmp_path: Path) -> None:
    first = ensure_tiny_checkpoint("text", tmp_path)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = ensure_tiny_checkpoint("text", tmp_path)
    assert again == first
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    # A half-written or foreign directory (no build record) is replaced, not trusted.
    (first / "gemma-fleet-checkpoint.json").unlink()
    rebuilt = ensure_tiny_checkpoint("text", tmp_path)
    assert read_build_info(rebuilt) is not None
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [first.name]


def test_tokenizer_has_gemma_control_tokens_and_ids(text_checkpoint: Path) -> None:
    tok = _tokenizer(text_checkpoint)
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id) == (0, 1, 2)
    for token in ("<|turn>", "<turn|>", "<|tool_call>", "<tool_call|>", '<|"|>', "<|channel>"):
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{token} is split into {ids}"
    generation = json.loads((text_checkpoint / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [1, tok.convert_tokens_to_ids("<turn|>")]


def test_chat_template_renders_gemma4_turns_tools_calls_and_results(
    text_checkpoint: Path,
) -> None:
    tok = _tokenizer(text_checkpoint)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call-1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call-1", "content": "sunny"},
        {"role": "assistant", "content": "Sunny."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "And here?"}]},
    ]
    text = tok.apply_chat_template(
        messages, tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=False
    )
    q = '<|"|>'
    assert text == (
        "<bos><|turn>system\nBe brief."
        f"<|tool>declaration:get_weather{{description:{q}Current weather{q},parameters:{{"
        f"properties:{{city:{{description:{q}City{q},type:{q}STRING{q}}},"
        f"days:{{type:{q}INTEGER{q}}}}},required:[{q}city{q}],type:{q}OBJECT{q}}}}}<tool|>"
        "<turn|>\n"
        "<|turn>user\nWeather in Paris?<turn|>\n"
        f"<|turn>model\n<|tool_call>call:get_weather{{city:{q}Paris{q},days:2}}<tool_call|>"
        f"<|tool_response>response:get_weather{{value:{q}sunny{q}}}<tool_response|>"
        "Sunny.<turn|>\n"
        "<|turn>user\n<|image|>And here?<turn|>\n"
        "<|turn>model\n"
    )


def test_generation_after_a_tool_result_continues_the_model_turn(text_checkpoint: Path) -> None:
    tok = _tokenizer(text_checkpoint)
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "a", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
            ],
        },
        {"role": "tool", "tool_call_id": "a", "content": "snow"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.endswith('response:get_weather{value:<|"|>snow<|"|>}<tool_response|>')
    thinking = tok.apply_chat_template(
        messages[:1], add_generation_prompt=True, tokenize=False, enable_thinking=True
    )
    assert thinking.startswith("<bos><|turn>system\n<|think|>\n<turn|>\n")


def test_vllm_gemma4_parser_reads_what_the_template_writes(text_checkpoint: Path) -> None:
    """The assistant turn the template renders for a tool call, fed to vLLM's registered
    `gemma4` tool parser with this checkpoint's tokenizer, comes back as the same call."""
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers import ToolParserManager

    tok = _tokenizer(text_checkpoint)
    arguments = {"city": 'São Paulo, "SP"', "days": 3, "units": ["c", "f"]}
    user = [{"role": "user", "content": "Weather?"}]
    call = {
        "role": "assistant",
        "tool_calls": [{"id": "x", "function": {"name": "get_weather", "arguments": arguments}}],
    }
    prompt = tok.apply_chat_template(
        user, tools=[WEATHER_TOOL], add_generation_prompt=True, tokenize=False
    )
    full = tok.apply_chat_template([*user, call], tools=[WEATHER_TOOL], tokenize=False)
    assert full.startswith(prompt)
    model_output = full[len(prompt) :]
    parser = ToolParserManager.get_tool_parser("gemma4")(tok)
    request = ChatCompletionRequest(model="m", messages=user, tools=[WEATHER_TOOL])
    extracted = parser.extract_tool_calls(model_output, request)
    assert extracted.tools_called
    [parsed] = extracted.tool_calls
    assert parsed.function.name == "get_weather"
    assert json.loads(parsed.function.arguments) == arguments


def test_cli_builds_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gemma_fleet.cli.checkpoints import checkpoints_app

    out = tmp_path / "kv"
    with pytest.raises(SystemExit) as done:
        checkpoints_app(["build", "--variant", "kv-shared", "--out", str(out)])
    assert done.value.code == 0
    assert read_build_info(out) is not None
    assert "kv-shared" in capsys.readouterr().out


def test_cli_refuses_an_unknown_variant() -> None:
    from gemma_fleet.cli.checkpoints import checkpoints_command
    from gemma_fleet.cli.errors import CliError

    with pytest.raises(CliError, match="unknown variant 'huge'"):
        checkpoints_command(variant="huge", out=None, seed=0)
