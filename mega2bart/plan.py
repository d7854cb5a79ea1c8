"""Will it fit? Peak memory and time of a mega2bart run, predicted from the configuration (`mega2bart plan`).

Nothing is instantiated: the shapes come from the presets or a saved model's `config.json`, and every figure
below is a count of the tensors that the code keeps alive, read off `models/mega/modeling_mega.py`,
`modeling_mega2bart.py` and transformers' BART. Notation: B batch, L encoder length (padded to a multiple of
the chunk C when longer than it), H/E/F/Z/N the MEGA widths (hidden, v_proj, NFFN, shared, EMA components),
d/f/h the decoder's width, FFN width and heads, T label tokens, k beams, n new tokens, s bytes per element.

What is counted (one peak per phase; the largest phase is the prediction, every phase is in `phases`):

- **weights** P x s (training: fp32 master weights; bf16 training is autocast, which also keeps a bf16
  copy of every Linear weight for backward: counted in weights). **gradients** P x 4. **optimizer states**
  AdamW 2 P x 4, Adafactor its factored rows + columns (full for vectors), SGD none.
- **encoder activations**, training: per MEGA layer and token, what autograd saves: 11 H (layer input, EMA
  output before/after SiLU, the 2H rows of mx_proj's output kept through the u/hx views, update gate, h before
  SiLU, h - residual, the pre-norm sum, the NFFN input and its pre-norm sum), 6 E (v_proj before/after SiLU,
  mx_proj's r rows, r after SiLU, the attention output, the gated product), 5 Z, 2 F (fc1 before/after SiLU)
  in s bytes, the chunk's softmax row (C floats, fp32; plus an s copy below fp32) and the masked fp32 signal
  when there is padding or the model is not fp32. That is 118 MB per layer per 1,024 tokens for the seed
  encoder in fp32, the figure measured with saved-tensor hooks (benchmarks/README.md). With gradient
  checkpointing (per block) only each block's input is kept, and one block is recomputed during backward.
  Inference keeps no activations: the working set of one layer (the attention step, in-place gates).
- **EMA/FFT temporaries**: `_convolve` builds the (2H, L) kernel, its (H, 2L) circular layout and two rFFT
  spectra of (B, H, L+1) complex values, multiplies them and inverts: about (6 + 4B) x H L x 4 bytes at once.
  In training it is recomputed in backward (a checkpoint around the convolution), which doubles the spectra.
- **encoder states**: the encoder output (B, L, H) and its projection to the decoder width (B, L, d), which
  generation keeps for the whole call (`_project_once`).
- **cross-attention cache**: K and V (B, h, L, d/h) per decoder layer, once per input however many beams
  (`SharedCrossAttentionCache`); in training the same K, V are saved for backward. **self-attention cache**:
  K and V for B k rows and n positions per layer.
- **decoder activations**: per BART layer and label token about 13 d + 2 f (+ f with activation dropout)
  in s bytes and 1-byte dropout masks; on the CPU with attention dropout, SDPA takes its math path, which
  saves the (B, h, T, L) cross-attention probabilities (softmax, dropout mask, dropped copy) per layer.
- **logits**: training (B T, V) in s, its fp32 copy and log-softmax, plus two (B T, V) gradients in backward;
  generation five (B k, V) fp32 score tables per step.
- **the rest**: `overhead_fraction` x the tensors + `overhead_bytes`: what the allocator, the interpreter
  and the libraries hold beyond the tensors (the one calibration, `CPU_OVERHEAD` / `CUDA_OVERHEAD`).

Time: FLOPs are counted as in benchmarks/README.md (projections, chunked attention, EMA kernel; BART's
projections and attention; training 3x the forward, 4x with checkpointing, which recomputes it). The rate is a
square matmul measured on the device for a moment (or `--tflops`) times `MODEL_EFFICIENCY`; decoding steps,
a few rows each, run at a second measured rate for few-row products.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, astuple, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Task = Literal["train", "generate"]
Dtype = Literal["fp32", "bf16", "fp16"]
Optimizer = Literal["adamw", "adafactor", "sgd"]
Device = Literal["cpu", "cuda"]

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
GIB = 1024**3

# The one calibration: peak = tensors x (1 + fraction) + bytes. CPU: solved from the two `calibrate` rows of
# benchmarks/bench_plan.py (peak RSS above the process's RSS before the model was built): c1, tiny, 1,024-token
# generation, 46.9 MB measured for 23.3 MB of tensors; c2, large, the same, 1,662.5 MB for 1,621.2 MB.
CPU_OVERHEAD = {"fraction": 0.011, "bytes": 23_400_000}
# CUDA: torch.cuda.max_memory_allocated counts tensors only; the caching allocator rounds and splits blocks and
# cuBLAS keeps a workspace. Not measured here (no GPU on the machine that made the benchmark): an assumption.
CUDA_OVERHEAD = {"fraction": 0.05, "bytes": 256 * 1024**2}
# Whole-model matmul throughput as a share of a square matmul's rate: 50-61% for the MEGA encoder in fp32 on
# the CPU (benchmarks/README.md, bench_encoder runs 1-2).
MODEL_EFFICIENCY = 0.55

BREAKDOWN_KEYS = (
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
    "rest",
)


class PlanError(ValueError):
    """A model, preset or workload the planner cannot plan (the message says why and what to pass)."""


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncoderShape:
    vocab: int
    hidden: int  # H
    layers: int
    intermediate: int  # E (v_proj)
    ffn: int  # F (NFFN), 0 without the normalised FFN
    shared: int  # Z
    ema_dim: int  # N
    chunk: int | None  # C, None without chunking
    bidirectional: bool
    max_positions: int
    token_types: int
    norm: str
    relative_bias: str

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EncoderShape:
        if config.get("model_type", "mega") != "mega":
            raise PlanError(f"the encoder is {config.get('model_type')!r}: `plan` knows MEGA encoders only")
        try:
            return cls(
                vocab=int(config["vocab_size"]),
                hidden=int(config["hidden_size"]),
                layers=int(config["num_hidden_layers"]),
                intermediate=int(config["intermediate_size"]),
                ffn=int(config.get("nffn_hidden_size", 0)) if config.get("use_normalized_ffn", True) else 0,
                shared=int(config["shared_representation_size"]),
                ema_dim=int(config["ema_projection_size"]),
                chunk=int(config["chunk_size"]) if config.get("use_chunking", False) else None,
                bidirectional=bool(config.get("bidirectional", True)),
                max_positions=int(config.get("max_positions", 2048)),
                token_types=int(config.get("type_vocab_size", 2)) if config.get("add_token_type_embeddings") else 0,
                norm=str(config.get("normalization_type", "scalenorm")),
                relative_bias=str(config.get("relative_positional_bias", "rotary")),
            )
        except KeyError as exc:
            raise PlanError(f"the encoder config has no {exc.args[0]!r}: is it a MEGA config?") from None

    def shapes(self) -> list[tuple[int, ...]]:
        """Every parameter's shape (the pooler is left out, as the builder does)."""
        H, E, F, Z, N = self.hidden, self.intermediate, self.ffn, self.shared, self.ema_dim
        D = 2 * H if self.bidirectional else H
        norm = {"scalenorm": [(1,)], "layernorm": [(H,), (H,)], "rmsnorm": [(H,)], "batchnorm": [(H,), (H,)]}
        shapes: list[tuple[int, ...]] = [(self.vocab, H)] + ([(self.token_types, H)] if self.token_types else [])
        for _ in range(self.layers):
            shapes += norm.get(self.norm, [(H,)])
            shapes += [(D, N, 1)] * 3 + [(D, N), (H,)]  # EMA: damping, decay, expansion, projection; omega
            shapes += [(E, H), (E,), (2 * H + Z + E, H), (2 * H + Z + E,), (H, E), (H,), (2, Z), (2, Z)]
            if self.relative_bias == "simple":
                shapes.append((2 * self.max_positions - 1,))
            else:
                shapes += [(1, Z), (1, Z)]
            if F:
                shapes += norm.get(self.norm, [(H,)]) + [(F, H), (F,), (H, F), (H,)]
        return shapes


@dataclass(frozen=True)
class DecoderShape:
    model_type: str
    vocab: int
    width: int  # d
    layers: int
    heads: int
    ffn: int  # f
    max_positions: int
    attention_dropout: float
    activation_dropout: float
    dropout: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DecoderShape:
        model_type = config.get("model_type", "bart")
        if model_type == "mega":
            raise PlanError("the decoder is MEGA: `plan` knows BART-family decoders (bart, mbart, pegasus, ...) only")
        try:
            return cls(
                model_type=str(model_type),
                vocab=int(config["vocab_size"]),
                width=int(config["d_model"]),
                layers=int(config["decoder_layers"]),
                heads=int(config["decoder_attention_heads"]),
                ffn=int(config["decoder_ffn_dim"]),
                max_positions=int(config.get("max_position_embeddings", 1024)),
                attention_dropout=float(config.get("attention_dropout", 0.0)),
                activation_dropout=float(config.get("activation_dropout", 0.0)),
                dropout=float(config.get("dropout", 0.0)),
            )
        except KeyError as exc:
            raise PlanError(
                f"the decoder config ({model_type}) has no {exc.args[0]!r}: `plan` knows BART-family decoders only"
            ) from None

    def shapes(self) -> list[tuple[int, ...]]:
        """BartForCausalLM with cross-attention: lm_head tied to the token embeddings (counted once)."""
        d, f = self.width, self.ffn
        shapes: list[tuple[int, ...]] = [(self.vocab, d)]
        if self.model_type != "pegasus":  # sinusoidal positions there
            shapes.append((self.max_positions + (2 if self.model_type == "bart" else 0), d))
        if self.model_type in ("bart", "mbart"):
            shapes += [(d,), (d,)]  # layernorm_embedding
        if self.model_type != "bart":
            shapes += [(d,), (d,)]  # final layer_norm
        for _ in range(self.layers):
            shapes += [(d, d), (d,)] * 8 + [(f, d), (f,), (d, f), (d,)] + [(d,)] * 6
        return shapes


@dataclass(frozen=True)
class ModelShape:
    name: str
    encoder: EncoderShape
    decoder: DecoderShape

    @property
    def projection_shapes(self) -> list[tuple[int, ...]]:
        if self.encoder.hidden == self.decoder.width:
            return []
        return [(self.decoder.width, self.encoder.hidden), (self.decoder.width,)]

    def all_shapes(self) -> list[tuple[int, ...]]:
        return self.encoder.shapes() + self.decoder.shapes() + self.projection_shapes

    def parameters(self) -> dict[str, int]:
        count = lambda shapes: sum(math.prod(s) for s in shapes)  # noqa: E731
        parts = {
            "encoder": count(self.encoder.shapes()),
            "decoder": count(self.decoder.shapes()),
            "enc_to_dec_proj": count(self.projection_shapes),
        }
        return {**parts, "total": sum(parts.values())}

    def linear_parameters(self) -> int:
        """Parameters of 2-D weights that go through matmuls (autocast keeps a low-precision copy of each)."""
        shapes = [s for s in self.all_shapes() if len(s) == 2 and min(s) > 2]
        return sum(math.prod(s) for s in shapes) - self.encoder.vocab * self.encoder.hidden


def load_shape(model_or_preset: str | Path) -> ModelShape:
    """The shapes of a preset ("tiny", "base", "large") or a saved model directory (its config.json)."""
    from .presets import PRESETS, random_init_sources

    name = str(model_or_preset)
    if name in PRESETS and not Path(name).is_dir():
        encoder, decoder = random_init_sources(name)
        return ModelShape(name, EncoderShape.from_config(encoder), DecoderShape.from_config(decoder))
    path = Path(name)
    if not path.exists():
        raise PlanError(f"{name!r} is neither a preset ({', '.join(sorted(PRESETS))}) nor a model directory")
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise PlanError(f"{path} has no config.json: pass a directory written by `mega2bart build` or a preset")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise PlanError(f"{config_file} is not readable JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(config, dict) or "encoder" not in config or "decoder" not in config:
        raise PlanError(f"{config_file} is not an encoder-decoder config (no 'encoder' and 'decoder' sections)")
    return ModelShape(
        path.name, EncoderShape.from_config(config["encoder"]), DecoderShape.from_config(config["decoder"])
    )


# ----------------------------------------------------------------------------------------------
# workload and result
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    task: Task = "generate"
    length: int = 16384  # encoder input tokens
    batch: int = 1
    beams: int = 4
    new_tokens: int = 256
    label_tokens: int = 512
    dtype: Dtype = "fp32"
    gradient_checkpointing: bool = False
    optimizer: Optimizer = "adamw"
    device: Device = "cpu"

    def __post_init__(self) -> None:
        choices = {
            "task": ("train", "generate"),
            "dtype": tuple(DTYPE_BYTES),
            "optimizer": ("adamw", "adafactor", "sgd"),
            "device": ("cpu", "cuda"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PlanError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("length", "batch", "beams", "new_tokens", "label_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PlanError(f"{name} ({value!r}) must be a whole number >= 1")


@dataclass(frozen=True)
class MatmulRate:
    """Matmul throughput in TFLOP/s: `large` for big products, `small` for a decoding step's few rows."""

    large: float
    small: float
    source: str


@dataclass
class Plan:
    shape: ModelShape
    workload: Workload
    peak_bytes: int
    peak_phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]
    flops: float
    seconds: float
    rate: MatmulRate
    parameters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.shape.name,
            "workload": asdict(self.workload),
            "parameters": self.parameters,
            "peak_bytes": self.peak_bytes,
            "peak_gib": round(self.peak_bytes / GIB, 3),
            "peak_phase": self.peak_phase,
            "breakdown": self.breakdown,
            "phases": self.phases,
            "flops": self.flops,
            "seconds": self.seconds,
            "matmul_tflops": asdict(self.rate),
            "notes": self.notes,
        }


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


def _optimizer_bytes(shape: ModelShape, optimizer: Optimizer) -> int:
    if optimizer == "sgd":
        return 0
    if optimizer == "adamw":
        return 2 * 4 * shape.parameters()["total"]
    total = 0
    for s in shape.all_shapes():  # Adafactor: row and column second moments of matrices, full for vectors
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
    weights = 4 * P + (2 * shape.linear_parameters() if s != 4 else 0)
    gradients = 4 * P
    decoder_grads = 4 * (shape.parameters()["decoder"] + shape.parameters()["enc_to_dec_proj"])
    optimizer = _optimizer_bytes(shape, w.optimizer)
    layer = _encoder_layer_saved(enc, tokens, block, s, padded or s != 4)
    states = tokens * enc.hidden * s + w.batch * w.length * dec.width * s  # encoder output, its projection
    dec_layer = _decoder_layer_saved(dec, rows, w.length, w.batch, s, math_attention)
    dec_embed = rows * dec.width * 3 * s
    if w.gradient_checkpointing:
        encoder_kept = enc.layers * tokens * enc.hidden * s
        decoder_kept = dec.layers * rows * dec.width * s + dec_embed
        encoder_in_backward = encoder_kept + layer
        decoder_in_backward = decoder_kept + dec_layer
    else:
        encoder_kept = enc.layers * layer
        decoder_kept = dec.layers * dec_layer + dec_embed
        encoder_in_backward = encoder_kept
        decoder_in_backward = decoder_kept
    logits_forward = rows * dec.vocab * (s + 4 + (4 if s != 4 else 0))
    logits_backward = rows * dec.vocab * (4 + s)
    base = {"weights": weights, "optimizer_states": optimizer}
    return {
        "forward": {
            **base,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
            "decoder_activations": decoder_kept,
            "logits": logits_forward,
        },
        "decoder backward": {
            **base,
            "gradients": 4 * dec.vocab * dec.width,
            "encoder_activations": encoder_kept,
            "encoder_states": states,
            "decoder_activations": decoder_in_backward,
            "logits": logits_forward + logits_backward,
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
        "optimizer step": {**base, "gradients": gradients},
    }


def _generate_phases(shape: ModelShape, w: Workload) -> dict[str, dict[str, int]]:
    enc, dec = shape.encoder, shape.decoder
    s, P, L, block, tokens = astuple(_Sizes.of(shape, w))
    rows = w.batch * w.beams
    weights = s * P
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


def memory_phases(shape: ModelShape, workload: Workload) -> dict[str, dict[str, int]]:
    """Per phase of the run, the bytes of each breakdown category alive at its peak (the rest excluded)."""
    phases = _train_phases(shape, workload) if workload.task == "train" else _generate_phases(shape, workload)
    return {name: {key: int(parts.get(key, 0)) for key in BREAKDOWN_KEYS} for name, parts in phases.items()}


def overhead(device: Device) -> dict[str, float]:
    return CUDA_OVERHEAD if device == "cuda" else CPU_OVERHEAD


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
    steps = sum(rows * decoder_token_flops(shape, t + 1, w.length) for t in range(w.new_tokens))
    flops = encoder + source + steps
    return flops, (encoder + source) / large + steps / (rate.small * 1e12)


def measure_matmul_rate(device: Device = "cpu", dtype: Dtype = "fp32", tflops: float | None = None) -> MatmulRate:
    """The device's matmul rate, measured in about a second (or `tflops`, for both kinds of product)."""
    if tflops is not None:
        if not tflops > 0:
            raise PlanError(f"--tflops ({tflops}) must be > 0")
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


# ----------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------


def plan_run(shape: ModelShape, workload: Workload, matmul_tflops: MatmulRate | dict[str, Any] | None = None) -> Plan:
    """Predicted peak memory (with its breakdown), FLOPs and seconds of `workload` on `shape`."""
    if isinstance(matmul_tflops, dict):
        matmul_tflops = MatmulRate(**matmul_tflops)
    rate = matmul_tflops or MatmulRate(0.1, 0.015, "assumed 0.1 TFLOP/s")
    calibration = overhead(workload.device)
    totals: dict[str, int] = {}
    detailed: dict[str, dict[str, int]] = {}
    for name, parts in memory_phases(shape, workload).items():
        tensors = sum(parts.values())
        parts["rest"] = int(calibration["fraction"] * tensors + calibration["bytes"])
        detailed[name], totals[name] = parts, tensors + parts["rest"]
    peak_phase = max(totals, key=totals.__getitem__)
    flops, seconds = _flops_and_seconds(shape, workload, rate)
    notes = []
    if workload.task == "train" and workload.device == "cpu" and shape.decoder.attention_dropout > 0:
        notes.append("CPU training with attention dropout: SDPA's math path keeps the cross-attention probabilities")
    if workload.length > shape.encoder.max_positions and shape.encoder.relative_bias == "simple":
        if _block(shape.encoder, padded_length(shape.encoder, workload.length)) > shape.encoder.max_positions:
            notes.append(f"length beyond the encoder's {shape.encoder.max_positions} positions")
    return Plan(
        shape=shape,
        workload=workload,
        peak_bytes=totals[peak_phase],
        peak_phase=peak_phase,
        breakdown=detailed[peak_phase],
        phases=totals,
        flops=flops,
        seconds=seconds,
        rate=rate,
        parameters=shape.parameters(),
        notes=notes,
    )


# ----------------------------------------------------------------------------------------------
# fit: the largest length / batch / beams, and what to change
# ----------------------------------------------------------------------------------------------


def parse_bytes(text: str) -> int:
    """'24GiB', '24 GB', '80G', '512MiB', '1e9' -> bytes (GB = 1e9, GiB and a bare G = 2**30)."""
    units = {"": 1, "B": 1, "K": 1024, "KIB": 1024, "KB": 1000, "M": 1024**2, "MIB": 1024**2, "MB": 1000**2}
    units |= {"G": GIB, "GIB": GIB, "GB": 1000**3, "T": 1024**4, "TIB": 1024**4, "TB": 1000**4}
    cleaned = text.strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGTIB")
    unit = cleaned[len(number) :]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise PlanError(f"cannot read {text!r} as a memory size: write e.g. 24GiB, 80GB or 512MiB") from None
    if value <= 0:
        raise PlanError(f"memory size {text!r} must be > 0")
    return int(value)


def _largest(fits: Callable[[int], bool], low: int, high: int, step: int = 1) -> int | None:
    """The largest multiple of `step` in [low, high] for which `fits` holds (assumed monotone), or None."""
    if not fits(low):
        return None
    if fits(high):
        return high
    lo, hi = low // step, high // step  # fits(lo*step) and not fits(hi*step)
    while hi - lo > 1:
        middle = (lo + hi) // 2
        lo, hi = (middle, hi) if fits(middle * step) else (lo, middle)
    return lo * step


def fit_report(shape: ModelShape, workload: Workload, device_memory: int) -> dict[str, Any]:
    """Whether `workload` fits in `device_memory` bytes, the largest length/batch/beams that do, and changes that fit."""

    def peak(w: Workload) -> int:
        return plan_run(shape, w).peak_bytes

    def fits_with(**changes: Any) -> Callable[[int], bool]:
        name = next(iter(changes))
        return lambda value: peak(replace(workload, **{name: value})) <= device_memory

    need = peak(workload)
    step = shape.encoder.chunk or 1
    largest = {
        "length": _largest(
            fits_with(length=1), step if step <= workload.length else 1, max(workload.length, 1 << 20), step
        ),
        "batch": _largest(fits_with(batch=1), 1, max(workload.batch, 4096)),
    }
    if workload.task == "generate":
        largest["beams"] = _largest(fits_with(beams=1), 1, max(workload.beams, 64))
    changes: list[dict[str, Any]] = []
    options: list[tuple[str, dict[str, Any]]] = []
    if workload.task == "train" and not workload.gradient_checkpointing:
        options.append(("add --gradient-checkpointing", {"gradient_checkpointing": True}))
    if workload.dtype == "fp32":
        options.append(("use --dtype bf16", {"dtype": "bf16"}))
    if workload.task == "train" and workload.optimizer == "adamw":
        options.append(("use --optimizer adafactor", {"optimizer": "adafactor"}))
    if workload.task == "generate" and workload.beams > 1:
        options.append((f"use --beams {max(1, workload.beams // 2)}", {"beams": max(1, workload.beams // 2)}))
    if workload.batch > 1:
        options.append((f"use --batch {max(1, workload.batch // 2)}", {"batch": max(1, workload.batch // 2)}))
    for text, change in options:
        bytes_needed = peak(replace(workload, **change))
        changes.append({"change": text, "peak_bytes": bytes_needed, "fits": bytes_needed <= device_memory})
    if need > device_memory and largest["length"] is not None and largest["length"] < workload.length:
        bytes_needed = peak(replace(workload, length=largest["length"]))
        changes.append({"change": f"use --length {largest['length']}", "peak_bytes": bytes_needed, "fits": True})
    return {
        "device_memory": device_memory,
        "peak_bytes": need,
        "fits": need <= device_memory,
        "largest": largest,
        "changes": changes,
    }


def fix_message(need: int, available: int, changes: list[dict[str, Any]], free_word: str = "free") -> str:
    """'needs 31.2 GiB, 23.6 GiB free: add --gradient-checkpointing (14.1 GiB) or use --dtype bf16 (20.3 GiB)'."""
    fitting = [c for c in changes if c["fits"]]
    head = f"needs {need / GIB:.1f} GiB, {available / GIB:.1f} GiB {free_word}"
    if not fitting:
        return f"{head}: no single change fits; shorten the input or use a larger device"
    return head + ": " + " or ".join(f"{c['change']} ({c['peak_bytes'] / GIB:.1f} GiB)" for c in fitting[:3])


# ----------------------------------------------------------------------------------------------
# the pre-flight check of train / summarize / eval on CUDA
# ----------------------------------------------------------------------------------------------


def _cuda_free_bytes() -> int | None:
    """Free memory of the current CUDA device, or None without CUDA (tests replace this function)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info()[0])


def preflight_check(model: str | Path, workload: Workload) -> Plan | None:
    """On CUDA: raise PlanError with the fix when the plan's peak exceeds the free device memory.

    Does nothing off CUDA or for a model the planner does not know (returns None then)."""
    if workload.device != "cuda":
        return None
    free = _cuda_free_bytes()
    if free is None:
        return None
    try:
        shape = load_shape(model)
    except PlanError:
        return None
    result = plan_run(shape, workload)
    if result.peak_bytes > free:
        report = fit_report(shape, workload, free)
        message = fix_message(result.peak_bytes, free, report["changes"])
        raise PlanError(f"this run does not fit the GPU: {message} (--no-plan-check skips this check)")
    return result


# ----------------------------------------------------------------------------------------------
# the report of `mega2bart plan`
# ----------------------------------------------------------------------------------------------


def plan_report(
    model_or_preset: str | Path,
    workload: Workload,
    device_memory: str | None = None,
    tflops: float | None = None,
) -> dict[str, Any]:
    """What `mega2bart plan` prints: the plan as a dict (`peak_bytes`, `seconds`, `breakdown`, ...), with `fit`
    when `device_memory` ("24GiB") is given. The matmul rate is measured on `workload.device` unless `tflops`."""
    memory = parse_bytes(device_memory) if device_memory is not None else None
    shape = load_shape(model_or_preset)
    rate = measure_matmul_rate(workload.device, workload.dtype, tflops)
    report = plan_run(shape, workload, rate).as_dict()
    report["overhead_calibration"] = dict(overhead(workload.device))
    if memory is not None:
        report["fit"] = fit_report(shape, workload, memory)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of `plan_report`'s dict."""
    w = report["workload"]
    what = (
        f"generate {w['new_tokens']} tokens with {w['beams']} beam(s)"
        if w["task"] == "generate"
        else f"train on {w['label_tokens']} label tokens, {w['optimizer']}"
        + (", gradient checkpointing" if w["gradient_checkpointing"] else "")
    )
    lines = [
        f"{report['model']}: {report['parameters']['total']:,} parameters; {what}; {w['length']:,} input tokens, "
        f"batch {w['batch']}, {w['dtype']} on {w['device']}",
        f"predicted peak {report['peak_bytes'] / GIB:.2f} GiB ({report['peak_bytes'] / 1e9:.2f} GB), "
        f"in phase '{report['peak_phase']}':",
    ]
    for key, value in report["breakdown"].items():
        if value:
            lines.append(f"  {key.replace('_', ' '):24s} {value / GIB:9.3f} GiB")
    lines.append("phases: " + ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in report["phases"].items()))
    rate = report["matmul_tflops"]
    lines.append(
        f"{report['flops'] / 1e12:.2f} TFLOP, about {report['seconds']:.1f} s at {rate['large']:.3g} TFLOP/s "
        f"({rate['source']}; few-row products {rate['small']:.3g})"
    )
    lines += [f"note: {note}" for note in report["notes"]]
    fit = report.get("fit")
    if fit:
        verdict = "fits" if fit["fits"] else "does NOT fit"
        lines.append(f"{verdict} in {fit['device_memory'] / GIB:.1f} GiB")
        largest = ", ".join(
            f"{name} {value if value is not None else 'none'}" for name, value in fit["largest"].items()
        )
        lines.append(f"largest that fit (one at a time, the rest as given): {largest}")
        if not fit["fits"]:
            lines.append(fix_message(fit["peak_bytes"], fit["device_memory"], fit["changes"], "available"))
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def preflight_generate(
    model: str | Path,
    max_input_tokens: int | None,
    batch_size: int,
    num_beams: int | None,
    max_new_tokens: int | None,
    dtype: str,
) -> Plan | None:
    """`summarize` / `eval` on CUDA: the plan of one generate call at the full context, against free memory.

    Unset values come from the model directory (generation_config.json, tokenizer_config.json)."""
    if _cuda_free_bytes() is None:
        return None
    path = Path(model)
    generation = _read_json(path / "generation_config.json")
    context = max_input_tokens or _read_json(path / "tokenizer_config.json").get("model_max_length")
    if not isinstance(context, int) or context > 10**7:
        context = _read_json(path / "config.json").get("encoder", {}).get("max_positions", 16384)
    workload = Workload(
        task="generate",
        length=int(context),
        batch=batch_size,
        beams=int(num_beams or generation.get("num_beams") or 1),
        new_tokens=int(max_new_tokens or generation.get("max_new_tokens") or 256),
        dtype=dtype if dtype in DTYPE_BYTES else "fp32",  # type: ignore[arg-type]
        device="cuda",
    )
    return preflight_check(model, workload)


def preflight_train(config: Any) -> Plan | None:
    """`train` on CUDA (a `TrainConfig`): the plan of one training step against free device memory."""
    if config.use_cpu or _cuda_free_bytes() is None:
        return None
    extra = config.extra_training_args
    optim = str(extra.get("optim", "adamw"))
    workload = Workload(
        task="train",
        length=config.max_source_length,
        batch=config.per_device_train_batch_size,
        label_tokens=config.max_target_length,
        dtype="bf16" if config.resolved_bf16() else ("fp16" if extra.get("fp16") else "fp32"),
        gradient_checkpointing=bool(config.gradient_checkpointing),
        optimizer="adafactor" if "adafactor" in optim else ("sgd" if optim == "sgd" else "adamw"),
        device="cuda",
    )
    return preflight_check(config.model, workload)
