"""FLOPs and seconds of a run: counted matmul work at a measured (or given) matmul rate."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .memory import _block, padded_length
from .shapes import Device, Dtype, EncoderShape, ModelShape, PlanError, Workload

# Whole-model matmul throughput as a share of a square matmul's rate: 50-61% for the MEGA encoder in fp32 on
# the CPU (benchmarks/README.md, bench_encoder runs 1-2).
MODEL_EFFICIENCY = 0.55

# What a FLOP count does not see: the fixed cost of each decoding step (the generation loop's logits processors
# and beam bookkeeping, the Python of every module call) and of each training step (the optimiser's pass over
# every parameter, zero_grad, autograd's bookkeeping). Set from bench_plan run P3 (quiet CPU, 2 threads): c1
# (tiny, 8 decoding steps: 0.098 s, 0.004 s of it FLOPs) and t1 (tiny training step: 0.142 s, 0.04 s FLOPs).
STEP_SECONDS = {"decoding_step": 0.012, "train_step": 0.10}


@dataclass(frozen=True)
class MatmulRate:
    """Matmul throughput in TFLOP/s: `large` for big products, `small` for a decoding step's few rows."""

    large: float
    small: float
    source: str
    fp32: float | None = None  # the fp32 rate of large products, for the work that is not a matmul (None: large)


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
    """FLOPs and seconds: the matmuls at the dtype's own rate, and the rest of a model's work (normalisations,
    activations, the EMA's FFTs, copies), which MODEL_EFFICIENCY puts at (1 / 0.55 - 1) of the matmul time in
    fp32, at the fp32 rate whatever the dtype (those kernels gain little from bf16 on a CPU); plus STEP_SECONDS."""
    reference = (rate.fp32 or rate.large) * 1e12
    per_flop = 1 / (rate.large * 1e12) + (1 / MODEL_EFFICIENCY - 1) / reference
    encoder = encoder_forward_flops(shape.encoder, w.batch, w.length)
    source = source_projection_flops(shape, w.batch, w.length)
    if w.task == "train":
        decoder = w.batch * w.label_tokens * decoder_token_flops(shape, w.label_tokens, w.length)
        passes = 4 if w.gradient_checkpointing else 3  # forward, backward (2x); checkpointing recomputes the forward
        if w.freeze == "encoder":  # the encoder runs forward only
            flops = encoder + passes * (source + decoder)
        else:
            flops = passes * (encoder + source + decoder)
        return flops, flops * per_flop + STEP_SECONDS["train_step"]
    rows = w.batch * w.beams
    # step t attends to t + 1 positions; the FLOPs are linear in that context, so the n steps sum to n times the
    # mean step (context (n + 1) / 2): one evaluation, not n (--new-tokens 10**9 answers at once)
    steps = rows * w.new_tokens * decoder_token_flops(shape, (w.new_tokens + 1) / 2, w.length)
    flops = encoder + source + steps
    seconds = (encoder + source) * per_flop + steps / (rate.small * 1e12)
    return flops, seconds + w.new_tokens * STEP_SECONDS["decoding_step"]


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
    square = torch.randn(side, side, device=device)
    weight = torch.randn(4096, 1024, device=device).to(torch_dtype)
    rows = torch.randn(1024, 4, device=device).to(torch_dtype)  # decoding: W x^T with a few rows
    large = rate(square.to(torch_dtype), square.to(torch_dtype), 0.6)
    fp32 = large if dtype == "fp32" else rate(square, square, 0.4)
    return MatmulRate(large, rate(weight, rows, 0.3), f"measured ({device}, {dtype})", fp32)


# few-row products (decoding steps) are memory bound: their rate as a share of the square-matmul rate, used
# with --tflops only (bench: about 0.1-0.2 on a CPU in fp32)
SMALL_ROW_SHARE = 0.15
