"""Where each part of a build comes from: Hub ids (`owner/name[@revision]`), directories, presets.

`resolve_source` turns what the user typed into what `from_pretrained` takes plus a `Source` record
(the provenance kept in `mega2bart_build.json`); `pin_revision` fixes a Hub source to one commit so
that every file of a part comes from the same snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from ..models.mega import MegaConfig
from ..presets import OFFLINE_TOKENIZER, get_preset, random_init_sources
from .errors import BuildError

logger = logging.getLogger(__name__)

Spec = str | os.PathLike | PretrainedConfig | Mapping[str, Any] | PreTrainedModel
"""An encoder or decoder source: Hub id, directory, config (or its dict: random init) or a model object."""

SourceKind = Literal["hub", "local", "config", "offline", "object"]


@dataclasses.dataclass
class Source:
    """Where one part came from: kind "hub", "local", "config" (random init), "offline" (the offline
    tokenizer) or "object" (passed in). Saved as a dict of these four fields."""

    kind: SourceKind | str
    name: str
    revision: str | None = None
    model_class: str | None = None

    def describe(self, *, markdown: bool = False) -> str:
        """One human-readable phrase, used by the build log, `mega2bart info` and the model card.

        `markdown=True` links a Hub id to its page; the words are the same.
        """
        if self.kind == "hub":
            shown = f"[`{self.name}`](https://huggingface.co/{self.name})" if markdown else f"`{self.name}`"
            return f"Hub {shown}" + (f" @ `{self.revision}`" if self.revision else "")
        if self.kind == "local":
            return f"local directory `{self.name}`"
        if self.kind == "config":
            return f"random init from a `{self.name}` (no pretrained weights)"
        if self.kind == "offline":
            return (
                f"offline tokenizer `{self.name}`: GPT-2 byte-level BPE in BART's layout (50265 tokens, `<s>` 0, "
                "`<pad>` 1, `</s>` 2, `<mask>` 50264) but NOT facebook/bart-large's ids; only for random-init models"
            )
        return f"a `{self.name}` object passed to the builder"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Source:
        """The inverse of `to_dict`; keys other than the four fields are ignored."""
        return cls(
            kind=str(data.get("kind", "unknown")),
            name=str(data.get("name", "?")),
            revision=data.get("revision"),
            model_class=data.get("model_class"),
        )


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or text.startswith(".") or "\\" in text


def _split_revision(text: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`); a local path is returned unchanged."""
    if "@" in text and not os.path.exists(text):
        name, revision = text.rsplit("@", 1)
        return name, revision or None
    return text, None


def resolve_source(spec: str | os.PathLike, role: str) -> tuple[str, Source]:
    """A Hub id or a directory -> (what to pass to from_pretrained, Source). Missing directories fail here."""
    text = os.fspath(spec)
    expanded = os.path.expanduser(text)
    if os.path.isdir(expanded):
        if not os.path.isfile(os.path.join(expanded, "config.json")) and role != "tokenizer":
            raise BuildError(
                f"{role} directory {text!r} has no config.json: pass a directory written by save_pretrained, "
                "or a Hugging Face Hub id"
            )
        return expanded, Source("local", str(Path(expanded).resolve()))
    if os.path.exists(expanded):
        raise BuildError(f"{role} {text!r} is a file, not a model directory: pass its folder or a Hub id")
    name, revision = _split_revision(text)
    if _looks_like_path(name) or not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)?", name):
        raise BuildError(
            f"{role} {text!r} is neither an existing directory nor a Hugging Face Hub id (owner/name): check the path"
        )
    return name, Source("hub", name, revision)


def hub_error(role: str, source: Source, exc: Exception) -> BuildError:
    """A `BuildError` for a part that could not be loaded: where from, the first line of the cause, the fix."""
    where = source.describe()
    first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return BuildError(
        f"could not load the {role} from {where}: {first_line}. Check the id/path; for a Hub id you need the "
        "network or a filled HF cache (HF_HUB_OFFLINE=1 uses the cache only)"
    )


def pin_revision(path: str, source: Source) -> Any:
    """For a Hub source: resolve the requested revision (default branch if None) to its commit, record the
    commit in `source.revision` and return what to pass as `revision=` so every file comes from that commit.
    None for other sources."""
    if source.kind != "hub":
        return None
    from transformers.utils.hub import resolve_revision

    resolved = resolve_revision(path, source.revision)
    commit = getattr(resolved, "resolved", None)
    if commit:
        source.revision = str(commit)
    return resolved


def config_from_mapping(values: Mapping[str, Any], default_type: str) -> PretrainedConfig:
    """A config dict (random init) -> the config object of its `model_type` (`default_type` when absent)."""
    values = dict(values)
    model_type = values.pop("model_type", default_type)
    if model_type == "mega":
        return MegaConfig(**values)
    return AutoConfig.for_model(model_type, **values)


def preset_kwargs(name: str, *, random_init: bool = False) -> dict[str, Any]:
    """`build_mega2bart` keyword arguments for the preset `name` ("tiny", "base", "large").

    random_init=True: the preset's architecture from configs embedded in mega2bart (random weights, the
    offline tokenizer, no network); the real shapes for benchmarks and smoke tests, not for summaries.
    """
    preset = get_preset(name)
    if random_init:
        encoder, decoder = random_init_sources(name)
        if name != "tiny":
            logger.warning(
                "preset %s with random_init: the real architecture with RANDOM weights and the offline tokenizer "
                "(no pretrained weights; for benchmarks and smoke tests)",
                name,
            )
        return {"encoder": encoder, "decoder": decoder, "tokenizer": OFFLINE_TOKENIZER}
    return {"encoder": preset.encoder, "decoder": preset.decoder, "tokenizer": preset.tokenizer}


__all__ = [
    "Source",
    "Spec",
    "config_from_mapping",
    "hub_error",
    "pin_revision",
    "preset_kwargs",
    "resolve_source",
]
