"""The shapes the planner works on: a MEGA encoder, a BART-family decoder, and the workload (`mega2bart plan`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Task = Literal["train", "generate"]
Dtype = Literal["fp32", "bf16", "fp16"]
Optimizer = Literal["adamw", "adafactor", "sgd"]
Device = Literal["cpu", "cuda"]
Freeze = Literal["none", "encoder"]

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
GIB = 1024**3


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

    def linear_parameters(self, trained_only_decoder: bool = False) -> int:
        """Parameters of 2-D weights that go through matmuls (autocast keeps a low-precision copy of each that
        requires a gradient); `trained_only_decoder`: those of the decoder and the projection alone."""
        if trained_only_decoder:
            shapes = [s for s in self.decoder.shapes() + self.projection_shapes if len(s) == 2 and min(s) > 2]
            return sum(math.prod(s) for s in shapes)
        shapes = [s for s in self.all_shapes() if len(s) == 2 and min(s) > 2]
        return sum(math.prod(s) for s in shapes) - self.encoder.vocab * self.encoder.hidden

    def trained_shapes(self, freeze: Freeze) -> list[tuple[int, ...]]:
        """The shapes of the parameters that train (`freeze` "encoder": the decoder and the projection)."""
        return self.decoder.shapes() + self.projection_shapes if freeze == "encoder" else self.all_shapes()


def load_shape(model_or_preset: str | Path) -> ModelShape:
    """The shapes of a preset ("tiny", "base", "large") or a saved model directory (its config.json)."""
    from ..presets import PRESETS, random_init_sources

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
    from ..builder import BuildError
    from ..builder.config_values import check_config_values

    try:
        check_config_values(config, f"{config_file}")  # the values every command checks before building
    except BuildError as exc:
        raise PlanError(str(exc)) from None
    return ModelShape(
        path.name, EncoderShape.from_config(config["encoder"]), DecoderShape.from_config(config["decoder"])
    )


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
    freeze: Freeze = "none"  # train: "encoder" keeps the MEGA encoder fixed (TrainConfig.freeze)

    def __post_init__(self) -> None:
        choices = {
            "task": ("train", "generate"),
            "dtype": tuple(DTYPE_BYTES),
            "optimizer": ("adamw", "adafactor", "sgd"),
            "device": ("cpu", "cuda"),
            "freeze": ("none", "encoder"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise PlanError(f"{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}")
        for name in ("length", "batch", "beams", "new_tokens", "label_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PlanError(f"{name} ({value!r}) must be a whole number >= 1")
