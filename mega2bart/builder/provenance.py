"""What `build_mega2bart` records about a model: `BuildInfo` (`model.mega2bart_build_info`).

Sources, parameters, which weights started random, vocabulary checks, context length, generation
defaults, the fingerprint of the built weights (`mega2bart.builder.fingerprint`), and any training runs
`ship_build_files` appended. The record travels in the model's config
(`CONFIG_BUILD_KEY`, so any save keeps it) and in `mega2bart_build.json` (`BUILD_INFO_FILE`, together with
the description of the saved directory: `mega2bart.builder.describe`).

The random-init report and the source phrases are rendered here once (`BuildInfo.random_init_lines`,
`Source.describe`) for the build log, `mega2bart info` and the model card.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from .sources import Source

BUILD_INFO_FILE = "mega2bart_build.json"
"""Machine-readable provenance written beside the weights (read by `describe_mega2bart`)."""
CONFIG_BUILD_KEY = "mega2bart_build"
"""The `BuildInfo` dict in the model's config (`model.config.mega2bart_build`), so any save keeps it."""
_PARTS = ("encoder", "decoder")


class RandomInitTensor(NamedTuple):
    """A weight with no value in any checkpoint (randomly initialised): its name in the built model and size."""

    name: str
    numel: int


@dataclasses.dataclass
class BuildInfo:
    """Provenance of a model built by `build_mega2bart` (`model.mega2bart_build_info`)."""

    encoder: Source
    decoder: Source
    tokenizer: Source
    tokenizer_is_real_bart: bool | None
    parameters: dict[str, int]
    """Unique parameters per part (tied weights once): encoder, decoder, enc_to_dec_proj, total."""
    random_init: list[RandomInitTensor]
    enc_to_dec_proj: bool
    vocabulary: dict[str, Any]
    """What `check_vocabularies` found: token count, embedding rows per part, the special-token ids."""
    context_length: int | None
    encoder_chunk_size: int | None
    generation: dict[str, Any]
    mega2bart_version: str = "unknown"
    encoder_ema_init: str | None = None
    """How the encoder's EMA time scales were set: "long: reaches A to B tokens", "port", "checkpoint" (None: no MEGA
    encoder, or a build of an earlier version)."""
    training: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Changes since the build: training runs (`ship_build_files`, each with the fingerprint of the weights it
    saved), vocabulary resizes (`Mega2BartModel.resize_token_embeddings`) and changes by runs mega2bart did not
    record, found when `mega2bart train` loaded the model; absent from the JSON while empty."""
    seed: int | None = None
    """The seed the random-init weights were drawn with (`build_mega2bart(seed=...)`); None before it was recorded."""
    weights: dict[str, Any] | None = None
    """The fingerprint of the built weights (`mega2bart.builder.fingerprint.WeightsFingerprint.to_dict`): `mega2bart
    info` compares it with a folder's weights; None in a record of an earlier version."""

    @property
    def random_init_parameters(self) -> int:
        return sum(tensor.numel for tensor in self.random_init)

    @property
    def all_random(self) -> bool:
        """True when no weight came from a checkpoint (a model built from configs alone)."""
        return bool(self.random_init) and self.random_init_parameters == self.parameters.get("total")

    def source(self, part: str) -> Source:
        return {"encoder": self.encoder, "decoder": self.decoder, "tokenizer": self.tokenizer}[part]

    def random_init_lines(self, *, markdown: bool = False, limit: int | None = None) -> list[str]:
        """The random-init report: a summary, then one line per part built from a config (all its tensors),
        then one per other random tensor (at most `limit`, then a count).

        Plain lines are indented by two spaces (the build log, `mega2bart info`); `markdown=True` gives
        list items with the names as code (the model card).
        """
        if not self.random_init:
            return ["none: every weight was loaded from a checkpoint"]
        summary = f"{len(self.random_init)} tensors, {self.random_init_parameters:,} parameters"
        if self.all_random:
            summary += " (ALL weights: a random-init model, not pretrained)"
        bullet, code = ("- ", "`") if markdown else ("  ", "")
        lines = [summary]
        whole = tuple(f"{part}." for part in _PARTS if self.source(part).kind == "config")
        for prefix in whole:
            tensors = [t for t in self.random_init if t.name.startswith(prefix)]
            lines.append(
                f"{bullet}{code}{prefix}*{code}: all {len(tensors)} tensors, {sum(t.numel for t in tensors):,} "
                f"parameters, {self.source(prefix[:-1]).describe(markdown=markdown)}"
            )
        listed = [t for t in self.random_init if not t.name.startswith(whole or ("\0",))]
        shown = listed if limit is None else listed[:limit]
        for tensor in shown:
            unused = ".pooler." in f".{tensor.name}"
            note = " (unused: the decoder reads the hidden states, not the pooler)" if unused else ""
            lines.append(f"{bullet}{code}{tensor.name}{code}: {tensor.numel:,}{note}")
        if len(listed) > len(shown):
            lines.append(f"{bullet}... {len(listed) - len(shown)} more tensors: see {code}{BUILD_INFO_FILE}{code}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the keys of `mega2bart_build.json`, in its order)."""
        data: dict[str, Any] = {
            "mega2bart_version": self.mega2bart_version,
            "encoder": self.encoder.to_dict(),
            "decoder": self.decoder.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "tokenizer_is_real_bart": self.tokenizer_is_real_bart,
            "parameters": dict(self.parameters),
            "random_init": [tensor._asdict() for tensor in self.random_init],
            "random_init_parameters": self.random_init_parameters,
            "enc_to_dec_proj": self.enc_to_dec_proj,
            "vocabulary": self.vocabulary,
            "context_length": self.context_length,
            "encoder_chunk_size": self.encoder_chunk_size,
            "encoder_ema_init": self.encoder_ema_init,
            "generation": self.generation,
            "seed": self.seed,
        }
        if self.weights is not None:
            data["weights"] = dict(self.weights)
        if self.training:
            data["training"] = [dict(run) for run in self.training]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BuildInfo:
        """The inverse of `to_dict`; missing keys take neutral defaults, `random_init_parameters` is recomputed."""
        return cls(
            mega2bart_version=str(data.get("mega2bart_version", "unknown")),
            encoder=Source.from_dict(data.get("encoder") or {}),
            decoder=Source.from_dict(data.get("decoder") or {}),
            tokenizer=Source.from_dict(data.get("tokenizer") or {}),
            tokenizer_is_real_bart=data.get("tokenizer_is_real_bart"),
            parameters=dict(data.get("parameters") or {}),
            random_init=[RandomInitTensor(str(e["name"]), int(e["numel"])) for e in data.get("random_init") or []],
            enc_to_dec_proj=bool(data.get("enc_to_dec_proj", False)),
            vocabulary=dict(data.get("vocabulary") or {}),
            context_length=data.get("context_length"),
            encoder_chunk_size=data.get("encoder_chunk_size"),
            encoder_ema_init=data.get("encoder_ema_init"),
            generation=dict(data.get("generation") or {}),
            training=[dict(run) for run in data.get("training") or []],
            seed=data.get("seed"),
            weights=dict(data["weights"]) if isinstance(data.get("weights"), Mapping) else None,
        )
