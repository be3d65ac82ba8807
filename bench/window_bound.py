"""How fast can Whisper's exact 30 s window be on this CPU? A lower bound from its arithmetic and measured matmuls.

Issue 15 asks the decoder path for <= 233 ms per 3 s clip at batch 8. At the exact window every engine must run
the window encoder over all of its positions (1,500 for every Whisper size; the decoder cross-attends to all of
them, padding included) and project them to every decoder layer's cross-attention keys and values: a fixed amount
of arithmetic per clip, however short the clip. This script counts it from the backbone config and times, alone on
this machine, the products that carry it at the batch's real shapes: float32 `F.linear` and `F.conv1d`, PyTorch's
fused `scaled_dot_product_attention`, and the int8 dynamic `Linear` that quantisation would swap in. The sum of those
times is a lower bound on the window pass: it leaves out layer norms, activations, residuals, greedy decoding and
every copy, so any real engine on the same kernels is slower.

    python -m bench.window_bound                      # whisper-base from ../shared, batch 8
    python -m bench.window_bound --batch 8 --repeats 5 --target_ms 233
"""

import argparse
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import WhisperConfig

from bench import WHISPER_BASE


@dataclass
class Part:
    """One kind of product in the window pass: how often it runs per clip, its float FLOPs per run and per clip,
    and a callable that runs it once for the whole batch (float32 and, for Linear layers, int8)."""

    name: str
    runs: int
    flops_per_run: float  # for one clip
    float32: object
    int8: object = None


def _linear(rows, d_in, d_out):
    """One float32 `F.linear` over `rows` positions, and the same as an int8 dynamic Linear."""
    x, layer = torch.randn(rows, d_in), torch.nn.Linear(d_in, d_out)
    with warnings.catch_warnings():  # torch 2.9 announces torch.ao.quantization's move to torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        quantised = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear}, dtype=torch.qint8)
    return (lambda: F.linear(x, layer.weight, layer.bias)), (lambda: quantised(x))


def window_parts(config: WhisperConfig, batch: int) -> list[Part]:
    """The products of one window pass of `config` for `batch` clips (FLOPs = 2 x multiply-adds, per clip)."""
    d, ffn, heads = config.d_model, config.encoder_ffn_dim, config.encoder_attention_heads
    positions, mels = config.max_source_positions, config.num_mel_bins
    rows = batch * positions
    mel = torch.randn(batch, mels, 2 * positions)
    conv1_w, conv2_w = torch.randn(d, mels, 3), torch.randn(d, d, 3)
    hidden = torch.randn(batch, d, 2 * positions)
    q = k = v = torch.randn(batch, heads, positions, d // heads)
    square = _linear(rows, d, d)
    up, down = _linear(rows, d, ffn), _linear(rows, ffn, d)
    return [
        Part("conv1 (mel -> d_model, 3000 frames)", 1, 2 * mels * 3 * d * 2 * positions,
             lambda: F.conv1d(mel, conv1_w, padding=1)),
        Part("conv2 (stride 2, 1500 positions)", 1, 2 * d * 3 * d * positions,
             lambda: F.conv1d(hidden, conv2_w, padding=1, stride=2)),
        Part("encoder q, k, v, out projections", 4 * config.encoder_layers, 2 * positions * d * d, *square),
        Part("encoder attention (fused SDPA)", config.encoder_layers, 2 * 2 * positions * positions * d,
             lambda: F.scaled_dot_product_attention(q, k, v)),
        Part("encoder MLP up (d_model -> ffn)", config.encoder_layers, 2 * positions * d * ffn, *up),
        Part("encoder MLP down (ffn -> d_model)", config.encoder_layers, 2 * positions * ffn * d, *down),
        Part("decoder cross-attention keys and values", 2 * config.decoder_layers, 2 * positions * d * d, *square),
    ]


def median_seconds(function, repeats, warmup=1):
    """Median wall seconds of `function()` over `repeats` calls after `warmup` untimed ones."""
    times = []
    for call in range(warmup + repeats):
        start = time.perf_counter()
        function()
        if call >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def measure(parts, batch, repeats):
    """Per part: (GFLOP per clip, float32 ms per clip, int8 ms per clip or None: the float32 time where no int8
    kernel replaces it)."""
    rows = []
    for part in parts:
        float_ms = 1000 * part.runs * median_seconds(part.float32, repeats) / batch
        int8_ms = 1000 * part.runs * median_seconds(part.int8, repeats) / batch if part.int8 else None
        rows.append((part, part.runs * part.flops_per_run / 1e9, float_ms, int8_ms))
    return rows


def table(rows, target_ms):
    """Markdown table and the verdict lines."""
    lines = ["| product | runs per clip | GFLOP per clip | float32 ms per clip | float32 GFLOP/s | int8 dynamic ms per clip |",
             "|---|---:|---:|---:|---:|---:|"]
    for part, gflop, float_ms, int8_ms in rows:
        int8 = f"{int8_ms:.1f}" if int8_ms is not None else f"({float_ms:.1f}, float32)"
        lines.append(f"| {part.name} | {part.runs} | {gflop:.2f} | {float_ms:.1f} | {1000 * gflop / float_ms:.0f} | {int8} |")
    gflop = sum(r[1] for r in rows)
    float_total = sum(r[2] for r in rows)
    int8_total = sum(r[3] if r[3] is not None else r[2] for r in rows)
    lines.append(f"| **total** | | **{gflop:.2f}** | **{float_total:.1f}** | {1000 * gflop / float_total:.0f} | **{int8_total:.1f}** |")
    lines.append("")
    for name, total in (("float32", float_total), ("Linear layers in int8 (dynamic), the rest float32", int8_total)):
        verdict = "within" if total <= target_ms else f"{total / target_ms:.2f}x over"
        lines.append(f"Lower bound of the exact 30 s window pass, {name}: {total:.0f} ms per clip; target {target_ms:g} ms: {verdict}")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(WHISPER_BASE), help="Whisper checkpoint (only its config is read)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per product (median), after one warm-up")
    parser.add_argument("--target_ms", type=float, default=233.0, help="issue 15's target: 933 ms / 4")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")
    if not (Path(args.model) / "config.json").is_file():
        parser.error(f"--model {args.model}: no config.json there")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = WhisperConfig.from_pretrained(args.model)
    rows = measure(window_parts(config, args.batch), args.batch, args.repeats)
    command = " ".join(["python -m bench.window_bound", *(sys.argv[1:] if argv is None else argv)])
    print(f"Command: `{command}`\n")
    print(f"- {args.model}: d_model {config.d_model}, {config.encoder_layers} encoder / {config.decoder_layers} decoder layers, "
          f"{config.max_source_positions} window positions; batch {args.batch}")
    print(f"- torch {torch.__version__}, {platform.processor() or platform.machine()}, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads; median of {args.repeats} calls\n")
    print(table(rows, args.target_ms))


if __name__ == "__main__":
    main()
