"""FLOPs and seconds of a run: counted matmul work at a measured (or given) matmul rate."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .memory import _block, padded_length
from .shapes import Device, Dtype, EncoderShape, ModelShape, PlanError, Workload

# Whole-model matmul throughput as a share of a square matmul's rate, assumed where nothing is measured
# (--tflops): 50-61% for the MEGA encoder in fp32 on the Intel Xeon of bench_encoder runs 1-2 (benchmarks/README.md).
# It is the CPU's and the dtype's, not a constant: the whole encoder at 63-75% in fp32 and 55-71% in bf16 (1,024 to
# 16,384 tokens) on the AMD EPYC of run P7, so a measured plan times one encoder layer instead
# (`measure_model_efficiency`).
MODEL_EFFICIENCY = 0.55
# the longest input the efficiency is measured at: a layer's share of the matmul rate changes little beyond it
# (run P7, the whole encoder at 4,096 and 16,384 tokens: fp32 0.70 and 0.63, bf16 0.58 and 0.55; one layer at
# 4,096 tokens: 0.65-0.69 and 0.61-0.63)
EFFICIENCY_LENGTH = 4096

# What a FLOP count does not see: the fixed cost of each decoding step (the generation loop's logits processors
# and beam bookkeeping, the Python of every module call). Set from bench_plan run P3 (quiet CPU, 2 threads): c1
# (tiny, 8 decoding steps: 0.098 s, 0.004 s of it FLOPs).
STEP_SECONDS = {"decoding_step": 0.012}

# The optimiser's pass over every trained parameter, in ns per parameter (fp32 parameters, gradients and states
# streamed through memory): assumed with --tflops, otherwise measured (`measure_optimizer_cost`). Run P7 (AMD
# EPYC, 2 threads, 20M and 140M parameters): SGD 0.23-0.25, fused AdamW 0.49-0.54, Adafactor 3.3-6.6.
OPTIMIZER_NS_PER_PARAMETER = {"sgd": 0.3, "adamw": 0.5, "adafactor": 3.3}


@dataclass(frozen=True)
class MatmulRate:
    """Matmul throughput in TFLOP/s: `large` for big products, `small` for a decoding step's few rows."""

    large: float
    small: float
    source: str
    fp32: float | None = None  # the fp32 rate of large products, for the work that is not a matmul (None: large)
    # the whole model's work (matmuls and the rest) as a share of `large`, measured on one encoder layer of the
    # planned model for the planned task and dtype (`measure_model_efficiency`); None: MODEL_EFFICIENCY's model
    efficiency: float | None = None
    efficiency_source: str | None = None
    # ns per trained parameter of the planned optimiser's step (`measure_optimizer_cost`); None: the assumed
    # OPTIMIZER_NS_PER_PARAMETER
    optimizer_ns: float | None = None


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


def seconds_per_flop(rate: MatmulRate) -> float:
    """Seconds per counted FLOP of the model's work outside decoding steps: at `rate.efficiency` of the large
    rate where it was measured, otherwise the matmul at the large rate plus MODEL_EFFICIENCY's rest at fp32's."""
    if rate.efficiency is not None:
        return 1 / (rate.large * 1e12 * rate.efficiency)
    reference = (rate.fp32 or rate.large) * 1e12
    return 1 / (rate.large * 1e12) + (1 / MODEL_EFFICIENCY - 1) / reference


def _flops_and_seconds(shape: ModelShape, w: Workload, rate: MatmulRate) -> tuple[float, float]:
    """FLOPs and seconds: with a measured `rate.efficiency`, every counted FLOP at that share of the dtype's large
    rate; otherwise the matmuls at the dtype's own rate and the rest of a model's work (normalisations,
    activations, the EMA's FFTs, copies), which MODEL_EFFICIENCY puts at (1 / 0.55 - 1) of the matmul time in
    fp32, at the fp32 rate whatever the dtype. Decoding steps at the few-row rate; plus STEP_SECONDS."""
    per_flop = seconds_per_flop(rate)
    encoder = encoder_forward_flops(shape.encoder, w.batch, w.length)
    source = source_projection_flops(shape, w.batch, w.length)
    if w.task == "train":
        decoder = w.batch * w.label_tokens * decoder_token_flops(shape, w.label_tokens, w.length)
        passes = 4 if w.gradient_checkpointing else 3  # forward, backward (2x); checkpointing recomputes the forward
        if w.freeze == "encoder":  # the encoder runs forward only
            flops = encoder + passes * (source + decoder)
        else:
            flops = passes * (encoder + source + decoder)
        trained = sum(math.prod(shape_) for shape_ in shape.trained_shapes(w.freeze))
        per_parameter = rate.optimizer_ns if rate.optimizer_ns is not None else OPTIMIZER_NS_PER_PARAMETER[w.optimizer]
        return flops, flops * per_flop + trained * per_parameter * 1e-9
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


def one_layer_encoder(encoder: EncoderShape, tokens: int):
    """A random MEGA encoder of `encoder`'s shape with one layer and an 8-row embedding, no dropout, that takes
    `tokens` tokens (what `measure_model_efficiency` times)."""
    from ..models.mega.configuration_mega import MegaConfig
    from ..models.mega.modeling_mega import MegaModel

    config = MegaConfig(
        vocab_size=8,
        hidden_size=encoder.hidden,
        num_hidden_layers=1,
        intermediate_size=encoder.intermediate,
        ema_projection_size=encoder.ema_dim,
        bidirectional=encoder.bidirectional,
        shared_representation_size=encoder.shared,
        use_chunking=encoder.chunk is not None,
        chunk_size=encoder.chunk or -1,
        normalization_type=encoder.norm,
        relative_positional_bias=encoder.relative_bias,
        use_normalized_ffn=encoder.ffn > 0,
        nffn_hidden_size=encoder.ffn or encoder.hidden,
        max_positions=max(encoder.max_positions, tokens),
        add_token_type_embeddings=False,
        dropout_prob=0.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        nffn_activation_dropout_prob=0.0,
        use_pooler=False,
    )
    return MegaModel(config, add_pooling_layer=False)


def measure_model_efficiency(
    encoder: EncoderShape,
    rate: MatmulRate,
    device: Device = "cpu",
    dtype: Dtype = "fp32",
    length: int = 4096,
    train: bool = False,
    batch: int = 1,
) -> MatmulRate:
    """`rate` with the model's own share of its large rate: one random encoder layer of `encoder`'s shape (its
    embedding table cut to 8 rows) run at min(`length`, EFFICIENCY_LENGTH) tokens, `batch` rows of them (at most
    EFFICIENCY_LENGTH tokens in all: a small model's per-call costs are shared by its rows), forward (generation, the
    layer cast to `dtype`) or forward + backward (training, fp32 weights under `dtype` autocast, as the Trainer
    runs bf16), timed after one warm-up call; its counted FLOPs over the time, over the large rate. About a
    second for the seed's width at 4,096 tokens (training about three). Returns `rate` unchanged where the
    layer cannot run here (a dtype the device lacks)."""
    import time

    import torch

    tokens = min(length, EFFICIENCY_LENGTH)
    batch = max(1, min(batch, EFFICIENCY_LENGTH // tokens))
    model = one_layer_encoder(encoder, tokens).to(device)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ids = torch.randint(0, 8, (batch, tokens), device=device)
    if train:
        model.train()

        def call() -> None:
            with torch.autocast(device, dtype=torch_dtype, enabled=dtype != "fp32"):
                out = model(input_ids=ids).last_hidden_state
            out.float().sum().backward()
            model.zero_grad(set_to_none=True)

    else:
        model = model.to(torch_dtype).eval()

        def call() -> None:
            with torch.inference_mode():
                model(input_ids=ids)

    try:
        call()
        sync()
        times = []
        for _ in range(2):
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
    except RuntimeError:  # e.g. a dtype this device's kernels lack
        return rate
    flops = encoder_forward_flops(dataclasses.replace(encoder, layers=1), batch, tokens) * (3 if train else 1)
    efficiency = flops / (rate.large * 1e12) / min(times)
    what = "forward + backward" if train else "forward"
    return dataclasses.replace(
        rate,
        efficiency=efficiency,
        efficiency_source=f"measured: one encoder layer, {what}, {batch} x {tokens} tokens, {dtype} ({device})",
    )


def measure_workload_rate(encoder: EncoderShape, workload: Workload, tflops: float | None = None) -> MatmulRate:
    """The rate a plan of `workload` uses: `tflops` as given (MODEL_EFFICIENCY's model, the assumed optimiser
    costs), or the device's matmul rates measured with the model's own efficiency for the workload's task, dtype
    and length, and for training the optimiser's cost per parameter."""
    rate = measure_matmul_rate(workload.device, workload.dtype, tflops)
    if tflops is not None:
        return rate
    train = workload.task == "train"
    rate = measure_model_efficiency(
        encoder, rate, workload.device, workload.dtype, workload.length, train, workload.batch
    )
    if train:
        rate = dataclasses.replace(rate, optimizer_ns=measure_optimizer_cost(workload.optimizer, workload.device))
    return rate


def measure_optimizer_cost(optimizer: str, device: Device = "cpu", parameters: int = 16 * 2**20) -> float:
    """ns per parameter of one step of `optimizer` ("adamw" as the Trainer's fused AdamW, "adafactor", "sgd")
    over `parameters` fp32 parameters with gradients (16 tensors; 16M: beyond a CPU's caches, as a model is),
    the best of three steps after the one that creates its states."""
    import time

    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    tensors = [torch.nn.Parameter(torch.zeros(parameters // 16 // 1024, 1024, device=device)) for _ in range(16)]
    for tensor in tensors:
        tensor.grad = torch.full_like(tensor, 1e-3)
    if optimizer == "adamw":
        step = torch.optim.AdamW(tensors, lr=1e-5, fused=True)
    elif optimizer == "adafactor":
        step = torch.optim.Adafactor(tensors, lr=1e-5)
    else:
        step = torch.optim.SGD(tensors, lr=1e-5)
    step.step()
    sync()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step.step()
        sync()
        times.append(time.perf_counter() - start)
    return min(times) / sum(t.numel() for t in tensors) * 1e9


# few-row products (decoding steps) are memory bound: their rate as a share of the square-matmul rate, used
# with --tflops only (bench: about 0.1-0.2 on a CPU in fp32)
SMALL_ROW_SHARE = 0.15
