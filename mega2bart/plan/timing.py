"""FLOPs and seconds of a run: counted matmul work at a measured (or given) matmul rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .memory import _block, padded_length
from .shapes import Device, Dtype, EncoderShape, ModelShape, PlanError, Workload

# Whole-model matmul throughput as a share of a square matmul's rate: 50-61% for the MEGA encoder in fp32 on
# the CPU (benchmarks/README.md, bench_encoder runs 1-2).
MODEL_EFFICIENCY = 0.55


@dataclass(frozen=True)
class MatmulRate:
    """Matmul throughput in TFLOP/s: `large` for big products, `small` for a decoding step's few rows."""

    large: float
    small: float
    source: str


# ----------------------------------------------------------------------------------------------
# FLOPs and time
# ----------------------------------------------------------------------------------------------


def encoder_forward_flops(encoder: EncoderShape, batch: int, length: int) -> float:
    """Matmul FLOPs of one encoder forward (benchmarks/README.md) plus the FFTs (2.5 n log2 n per transform)."""
    H, E, F, Z, N = encoder.hidden, encoder.intermediate, encoder.ffn, encoder.shared, encoder.ema_dim
    L = padded_length(encoder, length)
    block = _block(encoder, L)
    D = 2 * H if encoder.bidirectional else H
    projections = 2 * L * (H * E + H * (2 * H + Z + E) + E * H + 2 * H * F)
    attention = 2 * L * block * (Z + E)
    fft = 3 * H * 2.5 * (2 * L) * math.log2(2 * L)
    return batch * encoder.layers * (projections + attention + 2 * D * N * L + fft)


def decoder_token_flops(shape: ModelShape, context: int, source: int) -> float:
    """FLOPs of one decoder position (all layers + lm_head), attending to `context` positions and `source` tokens."""
    d, f = shape.decoder.width, shape.decoder.ffn
    per_layer = 2 * (6 * d * d + 2 * d * f) + 4 * context * d + 4 * source * d
    return shape.decoder.layers * per_layer + 2 * d * shape.decoder.vocab


def source_projection_flops(shape: ModelShape, batch: int, source: int) -> float:
    """enc_to_dec_proj and every layer's cross-attention K and V projections of the encoder output."""
    d = shape.decoder.width
    projection = 2 * source * shape.encoder.hidden * d if shape.projection_shapes else 0
    return batch * (projection + shape.decoder.layers * 4 * source * d * d)


def _flops_and_seconds(shape: ModelShape, w: Workload, rate: MatmulRate) -> tuple[float, float]:
    large = rate.large * 1e12 * MODEL_EFFICIENCY
    encoder = encoder_forward_flops(shape.encoder, w.batch, w.length)
    source = source_projection_flops(shape, w.batch, w.length)
    if w.task == "train":
        decoder = w.batch * w.label_tokens * decoder_token_flops(shape, w.label_tokens, w.length)
        forward = encoder + source + decoder
        flops = (4 if w.gradient_checkpointing else 3) * forward
        return flops, flops / large
    rows = w.batch * w.beams
    # step t attends to t + 1 positions; the FLOPs are linear in that context, so the n steps sum to n times the
    # mean step (context (n + 1) / 2): one evaluation, not n (--new-tokens 10**9 answers at once)
    steps = rows * w.new_tokens * decoder_token_flops(shape, (w.new_tokens + 1) / 2, w.length)
    flops = encoder + source + steps
    return flops, (encoder + source) / large + steps / (rate.small * 1e12)


def measure_matmul_rate(device: Device = "cpu", dtype: Dtype = "fp32", tflops: float | None = None) -> MatmulRate:
    """The device's matmul rate, measured in about a second (or `tflops`, for both kinds of product)."""
    if tflops is not None:
        if not 0 < tflops <= 1e6:  # nan and inf too: a rate that JSON and the time estimate can hold
            raise PlanError(f"--tflops ({tflops}) must be a finite number above 0 and at most 1e6")
        return MatmulRate(tflops, tflops * SMALL_ROW_SHARE, "given")
    import time

    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    if device == "cuda" and not torch.cuda.is_available():
        raise PlanError("--device cuda but torch sees no CUDA device: pass --tflops to plan for one")
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def rate(a: torch.Tensor, b: torch.Tensor, seconds: float) -> float:
        torch.mm(a, b)
        sync()
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            calls += 1
        sync()
        return 2 * a.shape[0] * a.shape[1] * b.shape[1] * calls / (time.perf_counter() - start) / 1e12

    side = 4096 if device == "cuda" else 1024
    square = torch.randn(side, side, device=device).to(torch_dtype)
    weight = torch.randn(4096, 1024, device=device).to(torch_dtype)
    rows = torch.randn(1024, 4, device=device).to(torch_dtype)  # decoding: W x^T with a few rows
    return MatmulRate(rate(square, square, 0.6), rate(weight, rows, 0.3), f"measured ({device}, {dtype})")


# few-row products (decoding steps) are memory bound: their rate as a share of the square-matmul rate, used
# with --tflops only (bench: about 0.1-0.2 on a CPU in fp32)
SMALL_ROW_SHARE = 0.15
