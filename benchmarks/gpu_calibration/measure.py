"""Measure, on one GPU, what the simulator's roofline (deployments/engines/simulator/roofline.py)
assumes: how fast Gemma 4's own matmuls stream weights at decode batch sizes and how fast they
compute at prefill chunk sizes, and how long transformers' whole Gemma 4 takes for a prefill.

Needs PyTorch with CUDA (and transformers for the whole-model prefills); nothing from
gemma-fleet: spec.json (workload.py) carries the shapes. Weights are random; speed does not
depend on their values beyond the power draw, which random data exercises fully.

What runs:
- copy: a 4 GiB device-to-device copy, the bandwidth ceiling (bytes read + written / time);
- kernel_floor: a graph of 1,024 tiny dependent matmuls, the fixed time each kernel costs;
- stack: for each size and weight format, every decoder matmul of one forward pass (vLLM's
  fusion: qkv, o, gate_up, down, PLE, router, the routed experts, the tied LM head) for M
  tokens, captured in one CUDA graph so launch gaps are what vLLM's CUDA graphs leave, each
  layer with its own weights (so nothing is served from L2). Attention, norms, activations and
  sampling are left out: the roofline's memory and compute terms are matmul terms, and this
  is what they are compared with (report.py). Decode steps (M = batch) run the LM head on
  every token; prefill chunks (M = chunk) on the last only;
- hf_prefill: transformers' Gemma4ForCausalLM built at the real size with random weights,
  one forward of a chunk with no cache (SDPA attention), logits for the last token.

Usage (on the GPU machine, from the repository root):
    python3 benchmarks/gpu_calibration/measure.py benchmarks/gpu_calibration/spec.json OUT.json
    python3 benchmarks/gpu_calibration/measure.py spec.json OUT.json --smoke   # CPU, tiny shapes
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

MIN_TIMED_S = 0.3  # each configuration replays for at least this long
MAX_REPLAYS = 100
FP8 = torch.float8_e4m3fn


class Results:
    """Everything measured so far, rewritten to disk after each configuration so that a run
    stopped at its time limit still returns what it finished."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {"env": {}, "copy": None, "stack": [], "hf_prefill": []}
        self.data["errors"] = []

    def save(self) -> None:
        self.path.write_text(json.dumps(self.data, indent=1) + "\n")

    def error(self, where: str) -> None:
        self.data["errors"].append({"where": where, "error": traceback.format_exc(limit=3)})
        print(f"!! {where}: {traceback.format_exc(limit=1)}", file=sys.stderr, flush=True)
        self.save()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_callable(fn: Any, device: torch.device) -> dict[str, float]:
    """Median seconds of `fn` after warm-up; CUDA events on a GPU, wall clock elsewhere."""
    for _ in range(3):
        fn()
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    n = max(5, min(MAX_REPLAYS, int(MIN_TIMED_S / max(first, 1e-6))))
    samples = []
    for _ in range(n):
        if device.type == "cuda":
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
            begin.record()
            fn()
            end.record()
            end.synchronize()
            samples.append(begin.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "replays": n}


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            multiprocessors=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
        query = "driver_version,clocks.max.sm,clocks.max.mem,power.limit"
        try:
            smi = subprocess.run(
                ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            env["nvidia_smi"] = {"query": query, "answer": smi.stdout.strip()}
        except (OSError, subprocess.SubprocessError) as err:
            env["nvidia_smi"] = {"error": str(err)}
    return env


def free_cached(device: torch.device) -> None:
    """Hand freed blocks back, so the next size's weights find the memory in one piece."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure_copy(device: torch.device, gib: float) -> dict[str, Any]:
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    timing = time_callable(lambda: dst.copy_(src), device)
    moved = 2 * src.numel() * src.element_size()
    return {"bytes_read_and_written": moved, **timing, "bytes_per_s": moved / timing["median_s"]}


@dataclass(frozen=True)
class Routing:
    """One layer's routing of a step's tokens: tokens per expert, the token behind each
    routed row (grouped by expert) and the groups' end offsets (for torch._grouped_mm)."""

    counts: list[int]
    rows: torch.Tensor
    offsets: torch.Tensor


def measure_kernel_floor(device: torch.device, kernels: int) -> dict[str, Any]:
    """Time per matmul of a graph of `kernels` tiny dependent matmuls (1x256 by 256x256, bf16):
    the fixed cost each kernel of a decode step pays whatever it reads."""
    w = torch.randn(256, 256, dtype=torch.bfloat16, device=device) / 16
    x = torch.randn(1, 256, dtype=torch.bfloat16, device=device)

    def chain() -> torch.Tensor:
        y = x
        for _ in range(kernels):
            y = y @ w
        return y

    if device.type == "cuda":
        with torch.inference_mode():
            chain()
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                chain()
        timing = time_callable(graph.replay, device)
    else:
        with torch.inference_mode():
            timing = time_callable(chain, device)
    return {"kernels": kernels, **timing, "per_kernel_s": timing["median_s"] / kernels}


class Stack:
    """The decoder matmuls of one Gemma 4 size in one weight format, weights resident."""

    def __init__(
        self, entry: dict[str, Any], fmt: str, device: torch.device, moe_kernel: str
    ) -> None:
        self.entry, self.fmt, self.device, self.moe_kernel = entry, fmt, device, moe_kernel
        self.hidden = entry["hidden"]
        self.weight_bytes = 0
        self.layers = [[self._weight(op["in"], op["out"]) for op in ops] for ops in entry["layers"]]
        self.model_linears = [self._weight(op["in"], op["out"]) for op in entry["model_linears"]]
        # Tied LM head: kept in bf16 even in fp8 checkpoints (the catalog's fp8 format does
        # not quantize embeddings), as vLLM serves them.
        self.lm_head = self._weight(self.hidden, entry["vocab"], quantize=False)
        moe = entry["moe"]
        self.experts: list[tuple[torch.Tensor, torch.Tensor]] = []
        if moe is not None:
            e, inter = moe["num_experts"], moe["intermediate"]
            for _ in self.layers:
                gate_up = self._weight(self.hidden, 2 * inter, count=e)
                down = self._weight(inter, self.hidden, count=e)
                self.experts.append((gate_up, down))
        self.one = torch.ones((), dtype=torch.float32, device=device)

    def _weight(
        self, fan_in: int, fan_out: int, *, quantize: bool = True, count: int = 0
    ) -> torch.Tensor:
        """Random weights (`count` experts of them when given) in the stack's format, or in
        bf16 with `quantize` off."""
        shape = (count, fan_out, fan_in) if count else (fan_out, fan_in)
        w = torch.empty(shape, dtype=torch.bfloat16, device=self.device).normal_()
        w.mul_(fan_in**-0.5)
        if quantize and self.fmt == "fp8":
            w = w.to(FP8)
        self.weight_bytes += w.numel() * w.element_size()
        return w

    def _matmul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if w.dtype == FP8:
            # W8A8 as vLLM runs FP8 on Hopper: the activation is quantized on the fly.
            return torch._scaled_mm(
                x.to(FP8), w.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.bfloat16
            )
        return x @ w.t()

    def routing(self, tokens: int, seed: int) -> list[Routing]:
        """Each layer's routing: every token picks top_k distinct experts uniformly."""
        moe = self.entry["moe"]
        gen = torch.Generator().manual_seed(seed)
        layers = []
        for _ in self.layers:
            scores = torch.rand(tokens, moe["num_experts"], generator=gen)
            chosen = scores.topk(moe["top_k"], dim=1).indices.flatten()
            counts = torch.bincount(chosen, minlength=moe["num_experts"])
            # Rows grouped by expert, as a fused-MoE kernel's permutation leaves them.
            rows = torch.div(chosen.argsort(stable=True), moe["top_k"], rounding_mode="floor")
            offsets = counts.cumsum(0).to(torch.int32)
            layers.append(Routing(counts.tolist(), rows.to(self.device), offsets.to(self.device)))
        return layers

    def forward(self, x: torch.Tensor, lm_rows: int, routing: list[Routing] | None) -> Any:
        """One pass of every matmul for x's rows; returns the LM head's logits."""
        for w in self.model_linears:
            self._matmul(x, w)
        for i, weights in enumerate(self.layers):
            qkv, o, gate_up, down = weights[:4]
            attn = self._matmul(x, qkv)[:, : o.shape[1]].contiguous()
            x = self._matmul(attn, o)
            inter = self._matmul(x, gate_up)[:, : down.shape[1]].contiguous()
            x = self._matmul(inter, down)
            for w in weights[4:]:  # PLE gate and projection, or the router
                fan_in = w.shape[1]
                self._matmul(x if fan_in == self.hidden else x[:, :fan_in].contiguous(), w)
            if routing is not None:
                self._experts(x, self.experts[i], routing[i])
        return x[-lm_rows:] @ self.lm_head.t()

    def _experts(
        self, x: torch.Tensor, weights: tuple[torch.Tensor, torch.Tensor], route: Routing
    ) -> None:
        """The routed experts of one layer. grouped_mm: one grouped GEMM per projection over
        every expert, as vLLM's fused-MoE kernel runs them; loop: two matmuls per expert hit,
        which launch-bound small batches (the first H200 run measured this way)."""
        w_gate_up, w_down = weights
        inter = w_down.shape[2]
        if self.moe_kernel == "grouped_mm":
            routed = x.index_select(0, route.rows)
            h = torch._grouped_mm(routed, w_gate_up.transpose(1, 2), offs=route.offsets)
            torch._grouped_mm(h[:, :inter].contiguous(), w_down.transpose(1, 2), offs=route.offsets)
            return
        for expert, count in enumerate(route.counts):
            if count:
                rows = x[: min(count, x.shape[0])]
                h = self._matmul(rows, w_gate_up[expert])[:, :inter].contiguous()
                self._matmul(h, w_down[expert])


def measure_stack(
    entry: dict[str, Any],
    fmt: str,
    spec: dict[str, Any],
    device: torch.device,
    out: Results,
    moe_kernel: str,
) -> None:
    stack = Stack(entry, fmt, device, moe_kernel)
    cases = [("decode", m) for m in spec["decode_batches"]]
    cases += [("prefill", m) for m in spec["prefill_tokens"]]
    for phase, tokens in cases:
        where = f"stack {entry['model']} {fmt} {phase} {tokens}"
        try:
            # cuBLAS's fp8 matmuls want rows in multiples of 16 on some versions: a decode
            # batch of 1 runs as 16 rows, which reads the same weights.
            rows = -(-tokens // 16) * 16 if fmt == "fp8" else tokens
            routing = stack.routing(rows, seed=tokens) if entry["moe"] else None
            x = torch.randn(rows, stack.hidden, dtype=torch.bfloat16, device=device)
            lm_rows = rows if phase == "decode" else 1
            if device.type == "cuda":
                with torch.inference_mode():
                    stack.forward(x, lm_rows, routing)  # warm cuBLAS before capture
                    torch.cuda.synchronize()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        stack.forward(x, lm_rows, routing)
                timing = time_callable(graph.replay, device)
                del graph
            else:
                with torch.inference_mode():
                    timing = time_callable(partial(stack.forward, x, lm_rows, routing), device)
            record = {
                "model": entry["model"],
                "format": fmt,
                "phase": phase,
                "tokens": tokens,
                "rows": rows,
                "resident_weight_bytes": stack.weight_bytes,
                "distinct_experts_per_layer": (
                    statistics.mean(sum(1 for c in layer.counts if c) for layer in routing)
                    if routing
                    else None
                ),
                "moe_kernel": moe_kernel if routing else None,
                **timing,
            }
            out.data["stack"].append(record)
            out.save()
            print(f"{where}: {timing['median_s'] * 1e3:.3f} ms", flush=True)
        except Exception:
            out.error(where)


def measure_hf_prefill(
    entry: dict[str, Any], spec: dict[str, Any], device: torch.device, out: Results
) -> None:
    from transformers import Gemma4ForCausalLM, Gemma4TextConfig

    where = f"hf_prefill {entry['model']}"
    try:
        config = Gemma4TextConfig(**entry["hf_text_config"])
        torch.set_default_dtype(torch.bfloat16)
        start = time.perf_counter()
        with device:
            model = Gemma4ForCausalLM(config).eval()  # type: ignore[no-untyped-call]
        built_s = time.perf_counter() - start
        torch.set_default_dtype(torch.float32)
        params = sum(p.numel() for p in model.parameters())
    except Exception:
        torch.set_default_dtype(torch.float32)
        out.error(where)
        return
    for tokens in spec["prefill_tokens"]:
        try:
            ids = torch.randint(2, entry["vocab"], (1, tokens), device=device)
            forward = partial(model, input_ids=ids, use_cache=False, logits_to_keep=1)
            with torch.inference_mode():
                timing = time_callable(forward, device)
            out.data["hf_prefill"].append(
                {
                    "model": entry["model"],
                    "tokens": tokens,
                    "parameters": params,
                    "build_s": built_s,
                    "attn_implementation": getattr(config, "_attn_implementation", None),
                    **timing,
                }
            )
            out.save()
            print(f"{where} {tokens}: {timing['median_s'] * 1e3:.1f} ms", flush=True)
        except Exception:
            out.error(f"{where} {tokens}")


def shrink(spec: dict[str, Any]) -> dict[str, Any]:
    """Tiny shapes for a CPU smoke run of this script's logic (not a measurement)."""

    def small(n: int) -> int:
        # Multiples of 8 elements: grouped GEMMs want 16-byte strides, as real shapes have.
        return max(8, n // 64 // 8 * 8)

    def ops(layer: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [dict(op, **{"in": small(op["in"]), "out": small(op["out"])}) for op in layer]

    models = []
    for entry in spec["models"]:
        hf = dict(entry["hf_text_config"])
        hf.update(
            vocab_size=512,
            vocab_size_per_layer_input=512,
            hidden_size=64,
            intermediate_size=128,
            head_dim=16,
            global_head_dim=32,
            num_hidden_layers=4,
            layer_types=["sliding_attention", "full_attention"] * 2,
            num_kv_shared_layers=min(hf["num_kv_shared_layers"], 2),
            hidden_size_per_layer_input=min(hf["hidden_size_per_layer_input"], 8),
        )
        if hf.get("enable_moe_block"):
            hf.update(num_experts=8, top_k_experts=2, moe_intermediate_size=16)
        moe = entry["moe"] and dict(entry["moe"], num_experts=8, top_k=2, intermediate=16)
        models.append(
            dict(
                entry,
                hidden=small(entry["hidden"]),
                vocab=512,
                layers=[ops(layer) for layer in entry["layers"][:4]],
                model_linears=ops(entry["model_linears"]),
                moe=moe,
                hf_text_config=hf,
            )
        )
    return {"decode_batches": [1, 8], "prefill_tokens": [64], "models": models}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--models", nargs="*", help="only these sizes")
    parser.add_argument("--skip-hf", action="store_true", help="no whole-model prefills")
    parser.add_argument(
        "--moe-kernel",
        choices=["grouped_mm", "loop"],
        default="grouped_mm",
        help="routed experts as one grouped GEMM per projection, or a matmul per expert",
    )
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    if args.smoke:
        spec = shrink(spec)
    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.smoke:
        print("no GPU: this measures a GPU (use --smoke for a logic check)", file=sys.stderr)
        return 2
    out = Results(args.out)
    out.data["env"] = environment(device)
    out.data["env"]["smoke"] = args.smoke
    out.save()
    try:
        out.data["copy"] = measure_copy(device, 0.01 if args.smoke else 4)
        out.save()
    except Exception:
        out.error("copy")
    try:
        out.data["kernel_floor"] = measure_kernel_floor(device, 64 if args.smoke else 1024)
        out.save()
    except Exception:
        out.error("kernel_floor")
    for entry in spec["models"]:
        if args.models and entry["model"] not in args.models:
            continue
        for fmt in entry["formats"]:
            if fmt == "fp8" and device.type == "cpu":
                continue  # _scaled_mm needs fp8 tensor cores
            try:
                measure_stack(entry, fmt, spec, device, out, args.moe_kernel)
            except Exception:
                out.error(f"stack {entry['model']} {fmt}")
            free_cached(device)  # the weights just went out of scope
        if not args.skip_hf:
            measure_hf_prefill(entry, spec, device, out)
            free_cached(device)
    out.data["env"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out.save()
    print(f"wrote {args.out} ({len(out.data['errors'])} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
