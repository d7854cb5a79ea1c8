"""Load each part of a build: the encoder as a bare model, the decoder as a causal LM with
cross-attention, and the tokenizer; and say which weights no checkpoint provided.

Checkpoint edits happen here, each logged: a MEGA encoder's pooler is left out, a decoder config gets
`is_decoder`/`add_cross_attention` (and equal layer counts), and input embeddings that transformers 5
saved only under the seq2seq name `model.shared.weight` are copied into the causal LM.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BartConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from ..presets import OFFLINE_TOKENIZER
from .checks import check_decoder_type, check_encoder_type
from .errors import BuildError
from .integrity import check_model_files
from .provenance import RandomInitTensor
from .sources import Source, Spec, config_from_mapping, hub_error, pin_revision, resolve_source

logger = logging.getLogger(__name__)


class LoadedPart(NamedTuple):
    """An encoder or decoder, where it came from, and its weights that no checkpoint provided."""

    model: PreTrainedModel
    source: Source
    random_init: list[RandomInitTensor]


def all_parameters(model: nn.Module, prefix: str) -> list[RandomInitTensor]:
    """Every parameter of `model` (tied ones once), named with `prefix`: a part built from a config."""
    return [RandomInitTensor(f"{prefix}{name}", param.numel()) for name, param in model.named_parameters()]


def _missing_parameters(model: nn.Module, missing: list[str], prefix: str) -> list[RandomInitTensor]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return [RandomInitTensor(f"{prefix}{key}", params[key].numel()) for key in sorted(missing) if key in params]


def _pretrained_config(spec: str | os.PathLike, role: str) -> tuple[str, Source, Any, PretrainedConfig]:
    """(path, source, revision, config) of a Hub id or directory, the revision pinned to one commit."""
    path, source = resolve_source(spec, role)
    check_model_files(path, role)
    revision = pin_revision(path, source)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise hub_error(role, source, exc) from exc
    return path, source, revision, config


def _object_part(model: PreTrainedModel) -> LoadedPart:
    name = type(model).__name__
    return LoadedPart(model, Source("object", name, model_class=name), [])


# ----------------------------------------------------------------------------------------------
# encoder
# ----------------------------------------------------------------------------------------------


def _drop_mega_pooler(config: PretrainedConfig) -> None:
    """A MEGA encoder under a decoder needs no pooler (it would be unused random weight, and breaks DDP)."""
    if getattr(config, "model_type", None) == "mega" and getattr(config, "use_pooler", True):
        config.use_pooler = False
        logger.info("encoder: MEGA pooler left out (use_pooler=False): the decoder reads the hidden states")


def choose_long_reach(config: PretrainedConfig, role: str) -> None:
    """A MEGA that mega2bart initialises itself gets the long-reach EMA init unless its config chose one: with
    the 4.x init every EMA dimension forgets within ~4 tokens and nothing crosses a chunk (MegaConfig.ema_init)."""
    if getattr(config, "model_type", None) == "mega" and getattr(config, "ema_init", None) is None:
        config.ema_init = "long"
        config.check_ema_reach()  # the range the 4.x init never read must now make finite weights
        reach = config.ema_max_reach or config.max_positions
        logger.info(
            "%s: long-reach EMA init (reaches %g to %s tokens; ema_init='port' for the 4.x init)",
            role,
            config.ema_min_reach,
            f"{reach:,}",
        )


def _prepare_encoder_config(config: PretrainedConfig) -> PretrainedConfig:
    config.is_decoder = False
    config.add_cross_attention = False
    _drop_mega_pooler(config)
    return config


def load_encoder(spec: Spec) -> LoadedPart:
    """The encoder as a bare model (no LM head): from a Hub id, a directory, a config, or a model.

    Returns (model, source, random-init parameters named with the "encoder." prefix).
    """
    if isinstance(spec, PreTrainedModel):
        return _object_part(spec)
    if isinstance(spec, (PretrainedConfig, Mapping)):
        config = spec if isinstance(spec, PretrainedConfig) else config_from_mapping(spec, "mega")
        choose_long_reach(config, "encoder")
        model = AutoModel.from_config(_prepare_encoder_config(config))
        source = Source("config", type(config).__name__, model_class=type(model).__name__)
        return LoadedPart(model, source, all_parameters(model, "encoder."))
    path, source, revision, config = _pretrained_config(spec, "encoder")
    check_encoder_type(config, spec)
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        logger.info("encoder %s was saved as a decoder: is_decoder and add_cross_attention turned off", path)
    config = _prepare_encoder_config(config)
    try:
        model, loading = AutoModel.from_pretrained(path, config=config, revision=revision, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise hub_error("encoder", source, exc) from exc
    source.model_class = type(model).__name__
    return LoadedPart(model, source, _missing_parameters(model, list(loading["missing_keys"]), "encoder."))


# ----------------------------------------------------------------------------------------------
# decoder
# ----------------------------------------------------------------------------------------------


def _prepare_decoder_config(config: PretrainedConfig) -> PretrainedConfig:
    config.is_decoder = True
    config.add_cross_attention = True
    config.is_encoder_decoder = False
    encoder_layers, decoder_layers = getattr(config, "encoder_layers", None), getattr(config, "decoder_layers", None)
    if isinstance(config, BartConfig) or (encoder_layers is not None and decoder_layers is not None):
        if encoder_layers != decoder_layers:
            # BartConfig.num_hidden_layers follows encoder_layers; a decoder-only model whose encoder_layers
            # differs (distilbart 12-6, 12-3...) sizes its cache wrongly on transformers 5.x.
            logger.info(
                "decoder config: encoder_layers %s -> %s (= decoder_layers; the decoder-only model has no "
                "encoder, and the cache is sized from encoder_layers)",
                encoder_layers,
                decoder_layers,
            )
            config.encoder_layers = decoder_layers
    return config


def _checkpoint_tensor(path: str, revision: object, names: tuple[str, ...]) -> tuple[str, torch.Tensor] | None:
    """The first of `names` found in the checkpoint's safetensors file(s), or None."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    files: list[str] = []
    optional = {"revision": revision, "_raise_exceptions_for_missing_entries": False}
    index = cached_file(path, "model.safetensors.index.json", **optional)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        for name in names:
            if name in weight_map:
                shard = cached_file(path, weight_map[name], revision=revision)
                files.append(shard)
                break
    else:
        single = cached_file(path, "model.safetensors", **optional)
        if single:
            files.append(single)
    for file in files:
        with safe_open(file, framework="pt") as handle:
            keys = set(handle.keys())
            for name in names:
                if name in keys:
                    return name, handle.get_tensor(name)
    return None


def _restore_shared_embeddings(model: PreTrainedModel, path: str, revision: object, missing: list[str]) -> list[str]:
    """Seq2seq checkpoints saved by transformers 5 keep the decoder's input embeddings only as
    `model.shared.weight` (tied), so loading them as a causal LM leaves `model.decoder.embed_tokens`
    (and the tied `lm_head`) random. Copy them from the checkpoint; return the keys still missing."""
    embedding = model.get_input_embeddings()
    params = dict(model.named_parameters(remove_duplicate=False))
    embedding_keys = [key for key, value in params.items() if value is embedding.weight]
    if not any(key in missing for key in embedding_keys):
        return missing
    names = ("model.shared.weight", "shared.weight", "model.encoder.embed_tokens.weight")
    found = _checkpoint_tensor(path, revision, names)
    if found is None:
        return missing
    name, tensor = found
    if tuple(tensor.shape) != tuple(embedding.weight.shape):
        raise BuildError(
            f"decoder checkpoint {path!r}: {name} has shape {tuple(tensor.shape)} but the decoder's input embeddings "
            f"have {tuple(embedding.weight.shape)}; the checkpoint and its config disagree"
        )
    with torch.no_grad():
        embedding.weight.copy_(tensor)
    restored = set(embedding_keys)
    output = model.get_output_embeddings()
    if output is not None and output.weight is embedding.weight:
        restored |= {key for key, value in params.items() if value is output.weight}
    logger.info(
        "decoder input embeddings %s (and the tied LM head) were not in the checkpoint under the causal-LM name: "
        "loaded them from %s",
        ", ".join(sorted(embedding_keys)),
        name,
    )
    return [key for key in missing if key not in restored]


def _has_weights(directory: str) -> bool:
    return any(
        name.endswith((".safetensors", ".bin", ".pt", ".pth")) or name.endswith(".safetensors.index.json")
        for name in os.listdir(directory)
    )


def _random_decoder(config: PretrainedConfig, source: Source) -> LoadedPart:
    try:
        model = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise BuildError(f"decoder config {type(config).__name__} has no causal-LM class: {exc}") from exc
    source.model_class = type(model).__name__
    return LoadedPart(model, source, all_parameters(model, "decoder."))


def load_decoder(spec: Spec) -> LoadedPart:
    """The decoder as a causal LM with cross-attention (BartForCausalLM for the BART family).

    Returns (model, source, random-init parameters named with the "decoder." prefix). Cross-attention
    that a checkpoint lacks (e.g. a decoder-only model) is reported as random-init.
    """
    if isinstance(spec, PreTrainedModel):
        _prepare_decoder_config(spec.config)
        return _object_part(spec)
    if isinstance(spec, (PretrainedConfig, Mapping)):
        config = spec if isinstance(spec, PretrainedConfig) else config_from_mapping(spec, "bart")
        check_decoder_type(config, spec)
        return _random_decoder(_prepare_decoder_config(config), Source("config", type(config).__name__))
    path, source, revision, config = _pretrained_config(spec, "decoder")
    check_decoder_type(config, spec)
    config = _prepare_decoder_config(config)
    if source.kind == "local" and not _has_weights(path):
        # a directory holding only config.json (e.g. a MEGA decoder config): a random-init decoder
        logger.info("decoder directory %s holds a config and no weights: building the decoder with random init", path)
        return _random_decoder(config, source)
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(
            path, config=config, revision=revision, output_loading_info=True
        )
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise BuildError(
                f"decoder {spec!r} ({type(config).__name__}) cannot be loaded as a causal LM, so it cannot decode "
                "with cross-attention: use a BART-family checkpoint (facebook/bart-base, facebook/bart-large, "
                "sshleifer/distilbart-cnn-12-6, ...)"
            ) from exc
        raise hub_error("decoder", source, exc) from exc
    except OSError as exc:
        raise hub_error("decoder", source, exc) from exc
    source.model_class = type(model).__name__
    missing = _restore_shared_embeddings(model, path, revision, list(loading["missing_keys"]))
    return LoadedPart(model, source, _missing_parameters(model, missing, "decoder."))


# ----------------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------------

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
"""Files of which a tokenizer source needs at least one. Without any, AutoTokenizer makes up a tokenizer of
a handful of special tokens from config.json alone, which would silently tokenize every text wrongly."""


def _has_tokenizer_files(path: str, revision: object) -> bool:
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, name)) for name in _TOKENIZER_FILES)
    from transformers.utils import cached_file

    try:
        found = {
            name: cached_file(path, name, revision=revision, _raise_exceptions_for_missing_entries=False)
            for name in ("config.json", "tokenizer_config.json", "tokenizer.json")
        }
    except (OSError, ValueError):
        return True  # unreachable Hub / no cache: let AutoTokenizer report the real problem
    # no config.json either: the repository is unknown or out of reach, which AutoTokenizer reports better
    return not found["config.json"] or bool(found["tokenizer_config.json"] or found["tokenizer.json"])


def _no_tokenizer_files(spec: str | os.PathLike, path: str, default_from: str | None) -> BuildError:
    found = ", ".join(sorted(os.listdir(path))) if os.path.isdir(path) else "no tokenizer_config.json or tokenizer.json"
    if default_from is not None:
        return BuildError(
            f"the {default_from} {os.fspath(spec)!r} has no tokenizer files ({found}), so there is no tokenizer to "
            f'default to: pass one explicitly (CLI: --tokenizer ID|DIR|offline; Python: tokenizer="...")'
        )
    return BuildError(
        f"tokenizer {os.fspath(spec)!r} has no tokenizer files ({found}; expected one of "
        f"{', '.join(_TOKENIZER_FILES)}): pass the directory or Hub id the tokenizer was saved to"
    )


def load_tokenizer(
    spec: str | os.PathLike | PreTrainedTokenizerBase | None, *, default_from: str | None = None
) -> tuple[PreTrainedTokenizerBase, Source]:
    """A tokenizer from a Hub id, a directory, an object, or "offline" (the BART-layout offline tokenizer).

    `default_from` names the part ("decoder") `spec` was taken from when no tokenizer was given; it only
    changes the error raised when that source has no tokenizer files.
    """
    if isinstance(spec, PreTrainedTokenizerBase):
        return spec, Source("object", type(spec).__name__)
    if spec is None or os.fspath(spec) == OFFLINE_TOKENIZER:
        from ..tokenization import OFFLINE_TOKENIZER_NAME, load_offline_tokenizer

        return load_offline_tokenizer(), Source("offline", OFFLINE_TOKENIZER_NAME)
    path, source = resolve_source(spec, "tokenizer")
    revision = pin_revision(path, source)
    if not _has_tokenizer_files(path, revision):
        raise _no_tokenizer_files(spec, path, default_from)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise hub_error("tokenizer", source, exc) from exc
    return tokenizer, source


__all__ = ["LoadedPart", "all_parameters", "load_decoder", "load_encoder", "load_tokenizer"]
