"""What mega2bart knows about a saved model directory, typed, and how it is shown.

- `ModelDescription`: what `describe_mega2bart` reads from a saved directory's files (architecture,
  parameters, context, generation, special ids, remote code, the encoder's EMA reach) together with its
  `BuildInfo` (the build's provenance: `mega2bart.builder.provenance`), if any. `save_mega2bart` writes it
  (less `path` and `reach`) as `mega2bart_build.json`; `to_dict` / `from_dict` keep that file's JSON format,
  so directories saved by earlier versions load unchanged.
- `MegaDescription`: what `describe_model` reads from a bare MEGA directory (a MegaModel, MegaForMaskedLM,
  ... saved alone, like the seed checkpoint): architecture, parameters, EMA reach.

The EMA reach (`mega2bart.models.mega.reach`) is computed from the weights each time, never stored:
training changes it, and `ship_build_files` copies a provenance file to the trained model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..models.mega.reach import EmaReach, mega_reach
from .errors import BuildError
from .fingerprint import WeightsCheck, check_weights
from .provenance import BUILD_INFO_FILE, CONFIG_BUILD_KEY, BuildInfo, RandomInitTensor
from .remote_code import has_remote_code

_BUILD_KEYS = frozenset({field.name for field in dataclasses.fields(BuildInfo)} | {"random_init_parameters"})
"""The keys of `BuildInfo.to_dict`: its fields and the computed `random_init_parameters`."""


@dataclasses.dataclass
class EncoderArchitecture:
    model_type: str | None
    hidden_size: int | None
    layers: int | None
    chunk_size: int | None
    """The attention chunk when the encoder chunks its attention, else None."""
    vocab_size: int | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> EncoderArchitecture:
        return cls(
            model_type=config.get("model_type"),
            hidden_size=config.get("hidden_size"),
            layers=config.get("num_hidden_layers"),
            chunk_size=config.get("chunk_size") if config.get("use_chunking") else None,
            vocab_size=config.get("vocab_size"),
        )


@dataclasses.dataclass
class DecoderArchitecture:
    model_type: str | None
    hidden_size: int | None
    layers: int | None
    vocab_size: int | None
    max_target_positions: int | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DecoderArchitecture:
        return cls(
            model_type=config.get("model_type"),
            hidden_size=config.get("d_model", config.get("hidden_size")),
            layers=config.get("decoder_layers", config.get("num_hidden_layers")),
            vocab_size=config.get("vocab_size"),
            max_target_positions=config.get("max_position_embeddings"),
        )


@dataclasses.dataclass
class Architecture:
    """The encoder and decoder shapes, read from config.json."""

    encoder: EncoderArchitecture
    decoder: DecoderArchitecture
    enc_to_dec_proj: bool
    model: str = "EncoderDecoderModel"

    def describe(self) -> str:
        enc, dec = self.encoder, self.decoder
        return (
            f"{self.model} = {enc.model_type} encoder ({enc.layers} layers, width {enc.hidden_size}, chunk "
            f"{enc.chunk_size}) -> {dec.model_type} decoder ({dec.layers} layers, width {dec.hidden_size})"
            + (" via enc_to_dec_proj" if self.enc_to_dec_proj else "")
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "encoder": dataclasses.asdict(self.encoder),
            "decoder": dataclasses.asdict(self.decoder),
            "enc_to_dec_proj": self.enc_to_dec_proj,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        def fields(kind: type, values: Mapping[str, Any]) -> dict[str, Any]:
            return {f.name: values.get(f.name) for f in dataclasses.fields(kind)}

        return cls(
            encoder=EncoderArchitecture(**fields(EncoderArchitecture, data.get("encoder") or {})),
            decoder=DecoderArchitecture(**fields(DecoderArchitecture, data.get("decoder") or {})),
            enc_to_dec_proj=bool(data.get("enc_to_dec_proj", False)),
            model=str(data.get("model", "EncoderDecoderModel")),
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """From an EncoderDecoderConfig's dict (config.json)."""
        encoder = EncoderArchitecture.from_config(config.get("encoder", {}))
        decoder = DecoderArchitecture.from_config(config.get("decoder", {}))
        return cls(encoder, decoder, enc_to_dec_proj=encoder.hidden_size != decoder.hidden_size)


class _ReachWarnings:
    """The `warnings` of a description with an EMA `reach` (`ModelDescription`, `MegaDescription`)."""

    reach: EmaReach | None

    @property
    def warnings(self) -> list[str]:
        """One-line warnings `mega2bart info` shows after the summary (an EMA that crosses no chunk)."""
        return [self.reach.warning] if self.reach is not None and self.reach.warning else []


@dataclasses.dataclass
class ModelDescription(_ReachWarnings):
    """Everything `mega2bart info` shows about a saved directory; its JSON form is `mega2bart_build.json`."""

    architecture: Architecture
    parameters: dict[str, int] | None
    """Per part, from the safetensors headers (tied weights once); the build's counts when there are no weights."""
    context_length: int | None
    generation: dict[str, Any]
    special_tokens: dict[str, Any]
    remote_code: bool
    build: BuildInfo | None = None
    """None when the directory has no `mega2bart_build.json` (not built by mega2bart)."""
    path: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Keys of a `mega2bart_build.json` that this version does not know, kept so that a rewrite loses nothing."""
    reach: EmaReach | None = None
    """The MEGA encoder's EMA reach, from the weights; None for another encoder or a directory without weights."""
    weights_check: WeightsCheck | None = None
    """The folder's weights against the record's last fingerprint (`check_weights`); None without a build record."""

    def random_init_lines(self, *, markdown: bool = False, limit: int | None = None) -> list[str]:
        """`BuildInfo.random_init_lines`, or a one-line "unknown" without provenance."""
        if self.build is None:
            return [f"unknown: the model was not built by `mega2bart build` (no {BUILD_INFO_FILE})"]
        return self.build.random_init_lines(markdown=markdown, limit=limit)

    def summary_lines(self) -> list[str]:
        """The text `mega2bart info` prints."""
        lines = [f"model: {self.path}", f"architecture: {self.architecture.describe()}"]
        if self.build is not None:
            parts = ("encoder", "decoder", "tokenizer")
            lines += [f"{part} source: {self.build.source(part).describe()}" for part in parts]
            if self.build.encoder_ema_init:
                lines.append(f"encoder EMA init: {self.build.encoder_ema_init}")
            seed = getattr(self.build, "seed", None)
            lines.append(
                f"built by: mega2bart {self.build.mega2bart_version}" + (f", seed {seed}" if seed is not None else "")
            )
            lines += _training_lines(self.build.training, self.weights_check)
        lines.append("parameters: " + ", ".join(f"{k} {v:,}" for k, v in (self.parameters or {}).items()))
        summary, *details = self.random_init_lines(limit=20)
        lines += [f"random-init weights: {summary}", *details]
        lines.append(f"context length: {self.context_length}")
        generation = {k: v for k, v in self.generation.items() if v is not None}
        lines.append("generation: " + ", ".join(f"{k}={v}" for k, v in sorted(generation.items())))
        lines.append(f"remote code shipped: {self.remote_code}")
        special = {k: v for k, v in self.special_tokens.items() if v is not None}
        lines.append("special token ids: " + ", ".join(f"{k}={v}" for k, v in special.items()))
        if self.architecture.encoder.model_type == "mega":
            lines += _reach_lines(self.reach)
        return lines

    def to_dict(self, *, with_path: bool = True) -> dict[str, Any]:
        """The JSON form: the build's keys first, then the description's (which win where both have one).

        `with_path=False` is the `mega2bart_build.json` form: without `path`, `reach` and `weights_check`, the
        facts of the directory's current files (it may be moved; training changes the weights).
        """
        data = self.build.to_dict() if self.build is not None else {}
        data.update(
            architecture=self.architecture.to_dict(),
            parameters=self.parameters,
            context_length=self.context_length,
            generation=self.generation,
            special_tokens=self.special_tokens,
            remote_code=self.remote_code,
        )
        if with_path:
            data["path"] = self.path
            data["reach"] = self.reach.to_dict() if self.reach is not None else None
            data["weights_check"] = self.weights_check.to_dict() if self.weights_check is not None else None
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelDescription:
        """The inverse of `to_dict` (also reads a `mega2bart_build.json` of an earlier version)."""
        has_build = "random_init" in data
        known = {"architecture", "parameters", "context_length", "generation", "special_tokens", "remote_code", "path"}
        known |= {"reach", "weights_check"}  # `info --json` output read back: recomputed from the weights, never kept
        known |= _BUILD_KEYS if has_build else set()
        return cls(
            architecture=Architecture.from_dict(data.get("architecture") or {}),
            parameters=data.get("parameters"),
            context_length=data.get("context_length"),
            generation=dict(data.get("generation") or {}),
            special_tokens=dict(data.get("special_tokens") or {}),
            remote_code=bool(data.get("remote_code", False)),
            build=BuildInfo.from_dict(data) if has_build else None,
            path=data.get("path"),
            extra={key: value for key, value in data.items() if key not in known},
        )

    def to_json(self) -> str:
        """The `mega2bart_build.json` text (without `path`: a directory may be moved or renamed)."""
        return json.dumps(self.to_dict(with_path=False), indent=2, default=str) + "\n"


@dataclasses.dataclass
class MegaDescription(_ReachWarnings):
    """Everything `mega2bart info` shows about a bare MEGA directory (model_type "mega", saved alone)."""

    architecture: EncoderArchitecture
    model_class: str | None
    """config.json's `architectures[0]` (MegaModel, MegaForMaskedLM, ...)."""
    bidirectional: bool
    max_positions: int | None
    parameters: int | None
    """From the safetensors headers (tied weights once); None without safetensors files."""
    reach: EmaReach | None
    """None for a directory without weights."""
    path: str | None = None

    def summary_lines(self) -> list[str]:
        """The text `mega2bart info` prints."""
        arch = self.architecture
        role, ema = ("encoder", "bidirectional") if self.bidirectional else ("decoder", "causal")
        positions = f"{self.max_positions:,}" if self.max_positions is not None else "unknown"
        parameters = f"{self.parameters:,}" if self.parameters is not None else "unknown (no safetensors)"
        lines = [
            f"model: {self.path}",
            f"architecture: {self.model_class or 'MEGA'} = mega {role} ({arch.layers} layers, width "
            f"{arch.hidden_size}, chunk {arch.chunk_size}; {ema} EMA; {positions} positions; vocabulary "
            f"{arch.vocab_size})",
            f"parameters: {parameters}",
        ]
        return lines + _reach_lines(self.reach)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_class": self.model_class,
            "architecture": dataclasses.asdict(self.architecture),
            "bidirectional": self.bidirectional,
            "max_positions": self.max_positions,
            "parameters": self.parameters,
            "reach": self.reach.to_dict() if self.reach is not None else None,
            "path": self.path,
        }


def _reach_lines(reach: EmaReach | None) -> list[str]:
    if reach is None:
        return ["EMA reach: unknown (no weights in the directory)"]
    return reach.table_lines()


_EMA_FACTORS = ("ema_gate.damping_factor", "ema_gate.decay_factor")


def _ema_reach(directory: Path, config: Mapping[str, Any], prefix: str) -> EmaReach | None:
    """The EMA reach of the MEGA model whose weights are under `prefix` in `directory`; None without weights.

    Reads only the EMA factors: from the safetensors files, else from `pytorch_model*.bin` (memory-mapped).
    """
    import torch
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    files = sorted(directory.glob("*.safetensors"))
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if key.startswith(prefix) and key.endswith(_EMA_FACTORS):
                    tensors[key] = handle.get_tensor(key)
    if not files:
        for file in sorted(directory.glob("pytorch_model*.bin")):
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            tensors.update((k, v) for k, v in state.items() if k.startswith(prefix) and k.endswith(_EMA_FACTORS))
        if not tensors:
            return None
    try:
        return mega_reach(tensors, config)
    except ValueError as exc:
        raise BuildError(f"{str(directory)!r}: cannot read the MEGA EMA reach from its weights: {exc}") from exc


def _safetensors_counts(directory: Path) -> dict[str, int] | None:
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    counts = {"encoder": 0, "decoder": 0, "enc_to_dec_proj": 0, "other": 0}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                numel = 1
                for dim in handle.get_slice(key).get_shape():
                    numel *= dim
                part = key.split(".", 1)[0]
                counts[part if part in counts else "other"] += numel
    counts["total"] = sum(counts.values())
    if not counts["other"]:
        del counts["other"]
    return counts


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_build_info(directory: str | os.PathLike) -> BuildInfo | None:
    """The `BuildInfo` in `directory`'s config.json (`mega2bart_build`: every save writes it, `save_pretrained`
    and `Trainer.save_model` included), else in its `mega2bart_build.json` (earlier versions), else None."""
    directory = Path(directory).expanduser()
    record = _read_json(directory / "config.json").get(CONFIG_BUILD_KEY)
    if isinstance(record, dict) and "random_init" in record:
        return BuildInfo.from_dict(record)
    path = directory / BUILD_INFO_FILE
    return ModelDescription.from_dict(_read_json(path)).build if path.is_file() else None


def _training_lines(training: list[dict[str, Any]], check: WeightsCheck | None) -> list[str]:
    """`info`'s lines for the changes since the build (the `training` list of the build record), and whether the
    folder's weights are still those the last of them (or the build) fingerprinted."""
    if check is not None and check.status == "changed":
        unrecorded = f"changed after {'the build' if not training else 'the last'} by a run mega2bart did not record"
    else:
        unrecorded = None
    if not training:
        if unrecorded:
            return [f"training since the build: {unrecorded} (the weights are not the built ones)"]
        if check is not None and check.status == "unknown":
            return [f"training since the build: none recorded ({check.detail})"]
        return [
            "training since the build: none"
            + (f" (the built weights, {check.detail})" if check and check.detail else "")
        ]
    lines = [f"training since the build: {len(training)} run(s)"]
    for run in training:
        known = {"from": "from", "global_step": "steps", "dataset": "dataset"}
        parts = [f"{label} {run[key]}" for key, label in known.items() if run.get(key) is not None]
        parts += [f"{key} {value}" for key, value in run.items() if key not in {*known, "weights"}]
        lines.append("  " + ", ".join(parts))
    if unrecorded:
        lines.append(f"  then {unrecorded} (the weights are not those the last recorded change saved)")
    elif check is not None and check.detail:
        lines.append(
            f"  weights: {check.detail}" if check.status == "unknown" else f"  weights: the last run's, {check.detail}"
        )
    return lines


def _read_config(directory: Path) -> dict[str, Any]:
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BuildError(
            f"{str(directory)!r} is not a model directory (no config.json); pass a `mega2bart build` output"
        )
    from .integrity import check_model_files

    # every JSON side file (config.json parsed, a JSON object) and the weights' headers: damage is one BuildError
    check_model_files(directory)
    return json.loads(config_path.read_text())


def describe_model(model_dir: str | os.PathLike) -> ModelDescription | MegaDescription:
    """What `mega2bart info` shows: `describe_mega2bart` for an encoder-decoder, a `MegaDescription` for a bare
    MEGA directory (model_type "mega"), from the files only.

    Raises:
        BuildError: no config.json, or a model that is neither.
    """
    directory = Path(model_dir).expanduser()
    config = _read_config(directory)
    model_type = config.get("model_type")
    if model_type == "encoder-decoder":
        return _describe_mega2bart(directory, config, None)
    if model_type != "mega":
        raise BuildError(
            f"{str(directory)!r} holds a {model_type!r} model: `mega2bart info` describes a mega2bart model "
            "(model_type 'encoder-decoder') or a bare MEGA model (model_type 'mega')"
        )
    counts = _safetensors_counts(directory)
    return MegaDescription(
        architecture=EncoderArchitecture.from_config(config),
        model_class=(config.get("architectures") or [None])[0],
        bidirectional=bool(config.get("bidirectional", True)),
        max_positions=config.get("max_positions"),
        parameters=counts["total"] if counts else None,
        reach=_ema_reach(directory, config, prefix=""),
        path=str(directory.resolve()),
    )


def describe_mega2bart(model_dir: str | os.PathLike, build_info: BuildInfo | None = None) -> ModelDescription:
    """Everything `mega2bart info` shows about a mega2bart model, from the files only (not instantiated).

    Architecture, parameters per part (from the safetensors headers; tied weights once), random-init
    weights, context length, generation settings, the MEGA encoder's EMA reach (from its weights), and
    provenance: `build_info`, else the directory's `mega2bart_build.json` when it exists.

    Raises:
        BuildError: no config.json, or a config that is not an encoder-decoder.
    """
    directory = Path(model_dir).expanduser()
    return _describe_mega2bart(directory, _read_config(directory), build_info)


def _describe_mega2bart(directory: Path, config: dict[str, Any], build_info: BuildInfo | None) -> ModelDescription:
    """`describe_mega2bart` of a directory whose config.json `_read_config` has read (and its files checked)."""
    if build_info is None:
        build_info = read_build_info(directory)
    if config.get("model_type") != "encoder-decoder" or not config.get("encoder") or not config.get("decoder"):
        raise BuildError(
            f"{str(directory)!r} holds a {config.get('model_type')!r} model, not an encoder-decoder built by mega2bart"
        )
    generation = _read_json(directory / "generation_config.json")
    generation.pop("transformers_version", None)
    tokenizer_config = _read_json(directory / "tokenizer_config.json")
    build = build_info
    encoder_config = config["encoder"]
    reach = (
        _ema_reach(directory, encoder_config, prefix="encoder.") if encoder_config.get("model_type") == "mega" else None
    )
    return ModelDescription(
        architecture=Architecture.from_config(config),
        parameters=_safetensors_counts(directory) or (build.parameters if build else None),
        context_length=tokenizer_config.get("model_max_length", build.context_length if build else None),
        generation=generation or (build.generation if build else {}),
        special_tokens={
            key: config.get(key) for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id", "bos_token_id")
        },
        remote_code=has_remote_code(directory),
        build=build,
        path=str(directory.resolve()),
        reach=reach,
        weights_check=check_weights(directory, build) if build is not None else None,
    )


__all__ = [
    "BUILD_INFO_FILE",
    "CONFIG_BUILD_KEY",
    "Architecture",
    "BuildInfo",
    "MegaDescription",
    "ModelDescription",
    "RandomInitTensor",
    "describe_mega2bart",
    "describe_model",
    "read_build_info",
]
