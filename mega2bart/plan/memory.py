"""Peak memory per phase of a run: the tensors the code keeps alive (the package docstring lists them) and the
one calibration for what the allocator and the interpreter hold beyond them."""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass

from .shapes import DTYPE_BYTES, DecoderShape, Device, EncoderShape, ModelShape, Optimizer, Workload

# What a process holds besides its tensors: `process_bytes`, the interpreter with torch, transformers and
# mega2bart loaded (CPU) or the CUDA context (GPU memory), and the allocator's share, the largest phase's
# tensors x fraction + bytes. CPU: `mega2bart plan` measures `process_bytes` in itself (`measure_process_bytes`:
# its RSS after the imports every command makes); the constant here is that measurement on the machine of
# benchmarks/bench_plan.py (458.1 MB; the benchmark's workers, which import the same, start at 451.1 MB), used
# where the planner is called as a library. The allocator's share was solved from the two `calibrate` rows of
# bench_plan run P4 (whole-process peak RSS, the model loaded from disk, glibc's thresholds fixed at start-up as
# every mega2bart command does, `mega2bart.plan.allocator`): c1, tiny, 1,024-token generation, 499.5 MB measured
# for 23.3 MB of tensors; c2, large, the same, 2,048.4 MB for 1,521.1 MB: 3.4% + 17.4 MB (benchmarks/README.md).
# Run P5 (thresholds at 4 MiB; 16 MiB since, the same within 2% on the rows measured both ways) measured c1 and c2
# within 1% of this: kept.
CPU_OVERHEAD = {"fraction": 0.034, "bytes": 17_400_000, "process_bytes": 458_100_000}
# CUDA: torch.cuda.max_memory_allocated counts tensors only; the caching allocator rounds and splits blocks and
# cuBLAS keeps a workspace (the fraction and bytes), and the CUDA context with torch's kernels takes device memory
# before any tensor (process_bytes). Not measured here (no GPU on the machine that made the benchmark): assumed,
# until scripts/gpu_check.sh measures them.
CUDA_OVERHEAD = {"fraction": 0.05, "bytes": 256 * 1024**2, "process_bytes": 512 * 1024**2}


BREAKDOWN_KEYS = (
    "process",
    "load",
    "weights",
    "gradients",
    "optimizer_states",
    "encoder_activations",
    "ema_fft_temporaries",
    "encoder_states",
    "cross_attention_cache",
    "self_attention_cache",
    "decoder_activations",
    "logits",
    "allocator",
)


# ----------------------------------------------------------------------------------------------
# memory
# ----------------------------------------------------------------------------------------------


def padded_length(encoder: EncoderShape, length: int) -> int:
    """The length the MEGA blocks run on (`MegaModel._pad_to_chunks`)."""
    if encoder.chunk is None or length <= encoder.chunk or length % encoder.chunk == 0:
        return length
    return length + encoder.chunk - length % encoder.chunk


def _block(encoder: EncoderShape, length: int) -> int:
    return length if encoder.chunk is None else min(encoder.chunk, length)


def _optimizer_bytes(shapes: list[tuple[int, ...]], optimizer: Optimizer) -> int:
    """The states of the parameters of `shapes` (those that train: a parameter without a gradient gets none)."""
    if optimizer == "sgd":
        return 0
    if optimizer == "adamw":
        return 2 * 4 * sum(math.prod(s) for s in shapes)
    total = 0
    for s in shapes:  # Adafactor: row and column second moments of matrices, full for vectors
        total += (math.prod(s[:-1]) + math.prod(s[:-2] + s[-1:])) if len(s) >= 2 else s[0]
    return 4 * total


def _ema_fft_bytes(encoder: EncoderShape, batch: int, length: int, training: bool) -> int:
    unit = encoder.hidden * length * 4  # one (H, L) float32 plane; a (B, H, L+1) complex spectrum is 2B units
    live = 6 + 4 * batch  # kernel (2), circular (2), two spectra and their product or the inverse's output
    return unit * (live + (4 * batch + 2 if training else 0))  # backward: the spectra's gradients too


def _encoder_layer_saved(encoder: EncoderShape, tokens: int, block: int, s: int, fp32_signal: bool) -> int:
    H, E, F, Z = encoder.hidden, encoder.intermediate, encoder.ffn, encoder.shared
    per_token = s * (11 * H + 6 * E + 5 * Z + 2 * F) + 4 * block + (s * block if s != 4 else 0)
    per_token += 4 * H if fp32_signal else 0
    return tokens * per_token


def _encoder_layer_backward(encoder: EncoderShape, tokens: int, block: int, s: int) -> int:
    """Gradients in flight in one block's backward when it peaks, at the attention: those of the softmax
    (the NFFN's saved tensors, freed by then, about pay for the smaller ones)."""
    return tokens * 2 * 4 * block


def _encoder_inference_layer(encoder: EncoderShape, tokens: int, block: int, s: int) -> int:
    """One layer without autograd, at its attention step: input, value, EMA output, mx_proj's output, q/k,
    scores and their fp32 softmax, the attention output (gates are applied in place)."""
    H, E, Z = encoder.hidden, encoder.intermediate, encoder.shared
    return tokens * (s * (4 * H + 3 * E + 4 * Z + block) + 4 * block + (s * block if s != 4 else 0))


def _decoder_layer_saved(decoder: DecoderShape, rows: int, source: int, batch: int, s: int, math_attention: bool):
    d, f, h = decoder.width, decoder.ffn, decoder.heads
    dropout_masks = (3 * d if decoder.dropout else 0) + (f if decoder.activation_dropout else 0)
    per_row = s * (13 * d + 2 * f + (f if decoder.activation_dropout else 0)) + dropout_masks
    if math_attention:  # softmax output, dropout mask, dropped copy: (B, h, T, T) and (B, h, T, S)
        per_row += h * ((rows // batch) + source) * (2 * s + 1)
    return rows * per_row + 2 * batch * source * d * s  # + the cross-attention K, V saved for backward


def _cross_cache(shape: ModelShape, batch: int, source: int, s: int) -> int:
    return 2 * shape.decoder.layers * batch * source * shape.decoder.width * s


@dataclass(frozen=True)
class _Sizes:
    """What both tasks derive first: bytes per element s, parameters P, the padded length L, the attention
    block, and the encoder's tokens B x L."""

    s: int
    P: int
    L: int
    block: int
    tokens: int

    @classmethod
    def of(cls, shape: ModelShape, w: Workload) -> _Sizes:
        L = padded_length(shape.encoder, w.length)
        return cls(DTYPE_BYTES[w.dtype], shape.parameters()["total"], L, _block(shape.encoder, L), w.batch * L)


def _train_phases(shape: ModelShape, w: Workload) -> dict[str, dict[str, int]]:
    enc, dec = shape.encoder, shape.decoder
    s, P, L, block, tokens = astuple(_Sizes.of(shape, w))
    rows = w.batch * w.label_tokens
    padded = w.batch > 1 or L != w.length
    math_attention = w.device == "cpu" and dec.attention_dropout > 0
    frozen_encoder = w.freeze == "encoder"
    weights = 4 * P + (2 * shape.linear_parameters(frozen_encoder) if s != 4 else 0) - _unread_embedding(shape, w)
    decoder_grads = 4 * (shape.parameters()["decoder"] + shape.parameters()["enc_to_dec_proj"])
    gradients = decoder_grads if frozen_encoder else 4 * P
    encoder_layer_grads = 4 * (shape.parameters()["encoder"] - (enc.vocab + enc.token_types) * enc.hidden)
    optimizer = _optimizer_bytes(shape.trained_shapes(w.freeze), w.optimizer)
    layer = _encoder_layer_saved(enc, tokens, block, s, padded or s != 4)
    states = tokens * enc.hidden * s + w.batch * w.length * dec.width * s  # encoder output, its projection
    dec_layer = _decoder_layer_saved(dec, rows, w.length, w.batch, s, math_attention)
    dec_embed = rows * dec.width * 3 * s
    if w.gradient_checkpointing:
        encoder_kept = enc.layers * tokens * enc.hidden * s
        decoder_kept = dec.layers * rows * dec.width * s + dec_embed
        encoder_in_backward = encoder_kept + layer
        first_block = tokens * enc.hidden * s + layer
        decoder_in_backward = decoder_kept + dec_layer
    else:
        encoder_kept = enc.layers * layer
        decoder_kept = dec.layers * dec_layer + dec_embed
        encoder_in_backward = encoder_kept
        first_block = layer
        decoder_in_backward = decoder_kept
    logits_forward = rows * dec.vocab * (s + 4 + (4 if s != 4 else 0))
    # in backward the forward's logits are gone (log-softmax saves only its output): the loss's backward holds
    # that fp32 output and two fp32 gradients (of it, and of the logits), the lm_head's backward the logits'
    # gradient (and its cast below fp32) beside the new (V, d) weight gradient (profiler, benchmarks/README.md)
    loss_backward = rows * dec.vocab * 3 * 4
    logits_gradient = rows * dec.vocab * (4 + (s if s != 4 else 0))
    base = {"weights": weights, "optimizer_states": optimizer}
    if frozen_encoder:  # no graph through the encoder: it runs as in inference, and backward stops at its output
        return _frozen_encoder_phases(
            shape, w, base, states, decoder_kept, dec_layer, logits_forward, loss_backward, logits_gradient
        )
    return {
        "forward": {
            **base,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
            "decoder_activations": decoder_kept,
            "logits": logits_forward,
        },
        "loss backward": {
            **base,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
            "decoder_activations": decoder_in_backward,
            "logits": loss_backward,
        },
        "decoder backward": {
            **base,
            "gradients": 4 * dec.vocab * dec.width,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
            "decoder_activations": decoder_in_backward,
            "logits": logits_gradient,
        },
        # backward of the last block: all its saved tensors and the attention's gradients in flight
        "encoder backward": {
            **base,
            "gradients": decoder_grads,
            "encoder_activations": encoder_in_backward + _encoder_layer_backward(enc, tokens, block, s),
            "encoder_states": tokens * enc.hidden * s,
        },
        # ... reaching its EMA: the convolution recomputed with its spectra and their gradients, while the
        # tensors saved after it in the block have been freed
        "encoder EMA backward": {
            **base,
            "gradients": decoder_grads,
            "encoder_activations": encoder_in_backward - layer + tokens * (2 * enc.hidden + enc.intermediate) * s,
            "ema_fft_temporaries": _ema_fft_bytes(enc, w.batch, L, True),
            "encoder_states": tokens * enc.hidden * s,
        },
        # the end of the decoder's backward: the tied embedding / lm_head weight receives its second gradient
        # (the embedding's), and the accumulation holds three (V, d) fp32 buffers at once: the lm_head's
        # gradient, the embedding's and their sum (profiler memory timeline, benchmarks/README.md, run P2)
        "decoder embedding backward": {
            **base,
            "gradients": decoder_grads + 2 * 4 * dec.vocab * dec.width,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
        },
        # the first block's backward, the last one reached: the other blocks' gradients exist by then, and of
        # the kept tensors only this block's are left
        "encoder backward, first block": {
            **base,
            "gradients": decoder_grads + encoder_layer_grads * (enc.layers - 1) // enc.layers,
            "encoder_activations": first_block + _encoder_layer_backward(enc, tokens, block, s),
            "encoder_states": tokens * enc.hidden * s,
        },
        # after backward: autocast's low-precision weight copies went with the graph
        "optimizer step": {**base, "weights": 4 * P, "gradients": gradients},
    }


def _frozen_encoder_phases(
    shape: ModelShape,
    w: Workload,
    base: dict[str, int],
    states: int,
    decoder_kept: int,
    dec_layer: int,
    logits: int,
    loss_backward: int,
    logits_gradient: int,
) -> dict[str, dict[str, int]]:
    """Training with the encoder frozen (`apply_freeze(model, "encoder")`): nothing in the encoder needs a
    gradient, so autograd saves none of its tensors; it peaks like an inference layer, and backward ends at the
    projection (gradients and optimizer states: the decoder's and the projection's only)."""
    enc, dec = shape.encoder, shape.decoder
    sizes = _Sizes.of(shape, w)
    decoder_grads = 4 * (shape.parameters()["decoder"] + shape.parameters()["enc_to_dec_proj"])
    fp32_signal = (w.batch > 1 or sizes.L != w.length or sizes.s != 4) * sizes.tokens * enc.hidden * 4
    in_backward = decoder_kept + dec_layer
    return {
        "encoder EMA": {
            **base,
            "encoder_activations": sizes.tokens * (enc.hidden + enc.intermediate) * sizes.s + fp32_signal,
            "ema_fft_temporaries": _ema_fft_bytes(enc, w.batch, sizes.L, False),
        },
        "encoder attention": {
            **base,
            "encoder_activations": _encoder_inference_layer(enc, sizes.tokens, sizes.block, sizes.s),
        },
        "forward": {**base, "encoder_states": states, "decoder_activations": decoder_kept, "logits": logits},
        "loss backward": {
            **base,
            "encoder_states": states,
            "decoder_activations": in_backward,
            "logits": loss_backward,
        },
        "decoder backward": {
            **base,
            "gradients": 4 * dec.vocab * dec.width,
            "encoder_states": states,
            "decoder_activations": in_backward,
            "logits": logits_gradient,
        },
        "decoder embedding backward": {
            **base,
            "gradients": decoder_grads + 2 * 4 * dec.vocab * dec.width,
            "encoder_states": states,
        },
        "optimizer step": {**base, "weights": 4 * shape.parameters()["total"], "gradients": decoder_grads},
    }


def _generate_phases(shape: ModelShape, w: Workload) -> dict[str, dict[str, int]]:
    enc, dec = shape.encoder, shape.decoder
    s, P, L, block, tokens = astuple(_Sizes.of(shape, w))
    rows = w.batch * w.beams
    weights = s * P - _unread_embedding(shape, w)
    encoder_out = tokens * enc.hidden * s
    fp32_signal = (w.batch > 1 or L != w.length or s != 4) * tokens * enc.hidden * 4
    layer_input_and_value = tokens * (enc.hidden + enc.intermediate) * s
    states = encoder_out + w.batch * w.length * dec.width * s
    self_cache = 2 * dec.layers * rows * w.new_tokens * dec.width * s
    return {
        "encoder EMA": {
            "weights": weights,
            "encoder_activations": layer_input_and_value + fp32_signal,
            "ema_fft_temporaries": _ema_fft_bytes(enc, w.batch, L, False),
        },
        "encoder attention": {
            "weights": weights,
            "encoder_activations": _encoder_inference_layer(enc, tokens, block, s),
        },
        "decoding": {
            "weights": weights,
            "encoder_states": states,
            "cross_attention_cache": _cross_cache(shape, w.batch, w.length, s),
            "self_attention_cache": self_cache,
            "decoder_activations": rows * (4 * dec.width + 2 * dec.ffn) * s + w.batch * w.length * dec.width * s,
            "logits": 5 * rows * dec.vocab * 4 + rows * dec.vocab * s,
        },
    }


# Linux maps the cached pages within 64 KiB of a faulting file page along with it (fault_around_bytes)
FAULT_AROUND_BYTES = 64 * 1024


def _unread_embedding(shape: ModelShape, w: Workload) -> int:
    """The part of the encoder's fp32 token-embedding table that no input reads, on the CPU, where it is never
    resident: the saved weights are memory-mapped (`load_mega2bart`, safetensors) and a page enters the RSS when
    it is first read (with the pages around it) or written (a trained parameter: the optimiser writes every row).
    B x L tokens at random rows read 1 - (1 - 1/windows)^(B L) of the table's 64 KiB windows; real text, with
    fewer distinct tokens, reads less. A cast (bf16 generation) copies the whole table."""
    cast = w.task == "generate" and w.dtype != "fp32"
    written = w.task == "train" and w.freeze == "none"
    if w.device != "cpu" or cast or written:
        return 0
    table = shape.encoder.vocab * shape.encoder.hidden * 4
    windows = max(1, table // FAULT_AROUND_BYTES)
    return int(table * (1 - 1 / windows) ** (w.batch * w.length))


def _load_phase(shape: ModelShape, w: Workload) -> dict[str, int]:
    """Loading the saved model (`load_mega2bart`: safetensors, fp32 as `mega2bart build` writes it). In fp32 the
    parameters stay memory-mapped and enter the RSS as they are read (in the run's phases); a generation in bf16
    or fp16 casts them while the fp32 file's pages are resident: both at once (bench_plan run P4, base: 1,319 MB
    above the process for 872 MB of file and 436 MB of bf16 weights)."""
    P = shape.parameters()["total"]
    if w.task == "train" or w.dtype == "fp32":
        return {"weights": 4 * P - _unread_embedding(shape, w)}
    return {"weights": DTYPE_BYTES[w.dtype] * P, "load": 4 * P if w.device == "cpu" else 0}


def memory_phases(shape: ModelShape, workload: Workload) -> dict[str, dict[str, int]]:
    """Per phase of the run, the bytes of each breakdown category alive at its peak (the process and the
    allocator's share excluded): "load" first, then the run's phases."""
    phases = {"load": _load_phase(shape, workload)}
    phases |= _train_phases(shape, workload) if workload.task == "train" else _generate_phases(shape, workload)
    return {name: {key: int(parts.get(key, 0)) for key in BREAKDOWN_KEYS} for name, parts in phases.items()}


def overhead(device: Device) -> dict[str, float]:
    return CUDA_OVERHEAD if device == "cuda" else CPU_OVERHEAD
