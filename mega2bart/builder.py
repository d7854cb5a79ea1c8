"""Build, save, load and describe a mega2bart model: a MEGA encoder + a BART decoder in one EncoderDecoderModel.

    model, tokenizer = build_mega2bart()                       # seed encoder + facebook/bart-large
    model, tokenizer = build_mega2bart(**preset_kwargs("tiny"))  # random toy, offline
    save_mega2bart(model, tokenizer, "out/mega2bart-large")
    model, tokenizer = load_mega2bart("out/mega2bart-large")

Every non-obvious step is logged: the random-init weights (with parameter counts), the
`enc_to_dec_proj` added when the widths differ, the vocabulary / special-token alignment, the
context length and the generation defaults. User errors raise `BuildError` naming the problem,
the value and the fix.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    BartConfig,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .modeling_mega2bart import Mega2BartModel
from .models.mega import MegaConfig
from .presets import DEFAULT_DECODER, DEFAULT_ENCODER, OFFLINE_TOKENIZER, get_preset, random_init_sources

logger = logging.getLogger(__name__)

BUILD_INFO_FILE = "mega2bart_build.json"
"""Machine-readable provenance written beside the weights (read by `describe_mega2bart`)."""
REMOTE_CODE_FILES = ("configuration_mega.py", "modeling_mega.py", "modeling_mega2bart.py")
_REMOTE_MARKER = "# @mega2bart:remote-code-registration@"
_REMOTE_REGISTRATION = '''\
# Written by mega2bart.builder: registering the MEGA files shipped beside this one lets
# transformers build the "mega" encoder sub-config and model without mega2bart installed.
from transformers import AutoConfig, AutoModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from .configuration_mega import MegaConfig
from .modeling_mega import MegaModel

if "mega" not in CONFIG_MAPPING:  # mega2bart itself (if imported) has registered it already
    AutoConfig.register("mega", MegaConfig, exist_ok=True)
    AutoModel.register(MegaConfig, MegaModel, exist_ok=True)
'''
# Module-name components that mark a cross-attention block in the decoder families that support it
# (BART/mBART/Marian/PLBart: encoder_attn, BERT/RoBERTa/GPT-2/ELECTRA: crossattention, others: cross_attn).
_CROSS_ATTENTION_NAMES = ("encoder_attn", "crossattention", "cross_attn", "cross_attention", "encdecattention")
DEFAULT_GENERATION: dict[str, Any] = dict(
    num_beams=4,
    max_new_tokens=512,
    min_new_tokens=32,
    no_repeat_ngram_size=3,
    length_penalty=2.0,
    early_stopping=True,
)
"""Beam search suited to long-document summaries (LED/arXiv-style settings), instead of the
20-token fallback that cuts summaries short (transformers #10032, #13424)."""


class BuildError(ValueError):
    """A user-fixable problem with the encoder, decoder, tokenizer or output directory."""


# ----------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------

Spec = str | os.PathLike | PretrainedConfig | Mapping[str, Any] | PreTrainedModel


@dataclasses.dataclass
class Source:
    """Where one part came from: kind "hub", "local", "config" (random init) or "object" (passed in)."""

    kind: str
    name: str
    revision: str | None = None
    model_class: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            return f"Hub `{self.name}`" + (f" @ {self.revision}" if self.revision else "")
        if self.kind == "local":
            return f"local directory `{self.name}`"
        if self.kind == "config":
            return f"random init from a {self.name}"
        if self.kind == "offline":
            return f"offline tokenizer {self.name} (BART layout, not BART ids)"
        return f"a {self.name} object passed in"


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~")) or text.count("/") > 1 or text.startswith(".") or "\\" in text


def _split_revision(text: str) -> tuple[str, str | None]:
    """`owner/name@rev` -> (`owner/name`, `rev`); a local path is returned unchanged."""
    if "@" in text and not os.path.exists(text):
        name, revision = text.rsplit("@", 1)
        return name, revision or None
    return text, None


def _resolve(spec: str | os.PathLike, role: str) -> tuple[str, Source]:
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
            f"{role} {text!r} is neither an existing directory nor a Hugging Face Hub id (owner/name): "
            "check the path"
        )
    return name, Source("hub", name, revision)


def _hub_error(role: str, source: Source, exc: Exception) -> BuildError:
    where = source.describe()
    first_line = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    return BuildError(
        f"could not load the {role} from {where}: {first_line}. Check the id/path; for a Hub id you need the "
        "network or a filled HF cache (HF_HUB_OFFLINE=1 uses the cache only)"
    )


def _pin_revision(path: str, source: Source) -> str | None:
    """For a Hub source: resolve the requested revision (default branch if None) to its commit, record the
    commit in `source.revision` and return what to pass as `revision=` so every file comes from that commit."""
    if source.kind != "hub":
        return None
    from transformers.utils.hub import resolve_revision

    resolved = resolve_revision(path, source.revision)
    commit = getattr(resolved, "resolved", None)
    if commit:
        source.revision = str(commit)
    return resolved


def _config_from_mapping(values: Mapping[str, Any], default_type: str) -> PretrainedConfig:
    values = dict(values)
    model_type = values.pop("model_type", default_type)
    if model_type == "mega":
        return MegaConfig(**values)
    return AutoConfig.for_model(model_type, **values)


def _all_parameters(model: nn.Module, prefix: str) -> list[tuple[str, int]]:
    return [(f"{prefix}{name}", param.numel()) for name, param in model.named_parameters()]


def _missing_parameters(model: nn.Module, missing: list[str], prefix: str) -> list[tuple[str, int]]:
    params = dict(model.named_parameters(remove_duplicate=False))
    return [(f"{prefix}{key}", params[key].numel()) for key in sorted(missing) if key in params]


# ----------------------------------------------------------------------------------------------
# encoder, decoder, tokenizer
# ----------------------------------------------------------------------------------------------


def _drop_mega_pooler(config: PretrainedConfig) -> None:
    """A MEGA encoder under a decoder needs no pooler (it would be unused random weight, and breaks DDP)."""
    if getattr(config, "model_type", None) == "mega" and getattr(config, "use_pooler", True):
        config.use_pooler = False
        logger.info("encoder: MEGA pooler left out (use_pooler=False): the decoder reads the hidden states")


def load_encoder(spec: Spec) -> tuple[PreTrainedModel, Source, list[tuple[str, int]]]:
    """The encoder as a bare model (no LM head): from a Hub id, a directory, a config, or a model.

    Returns (model, source, random-init parameters as (name, numel) with the "encoder." prefix).
    """
    if isinstance(spec, PreTrainedModel):
        return spec, Source("object", type(spec).__name__, model_class=type(spec).__name__), []
    if isinstance(spec, (PretrainedConfig, Mapping)):
        config = spec if isinstance(spec, PretrainedConfig) else _config_from_mapping(spec, "mega")
        config.is_decoder = False
        config.add_cross_attention = False
        _drop_mega_pooler(config)
        model = AutoModel.from_config(config)
        source = Source("config", type(config).__name__, model_class=type(model).__name__)
        return model, source, _all_parameters(model, "encoder.")
    path, source = _resolve(spec, "encoder")
    revision = _pin_revision(path, source)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
        _check_encoder_type(config, spec)
        if config.is_decoder or getattr(config, "add_cross_attention", False):
            logger.info("encoder %s was saved as a decoder: is_decoder and add_cross_attention turned off", path)
        config.is_decoder = False
        config.add_cross_attention = False
        _drop_mega_pooler(config)
        model, loading = AutoModel.from_pretrained(path, config=config, revision=revision, output_loading_info=True)
    except (OSError, ValueError, KeyError) as exc:
        raise _hub_error("encoder", source, exc) from exc
    source.model_class = type(model).__name__
    return model, source, _missing_parameters(model, list(loading["missing_keys"]), "encoder.")


def _check_encoder_type(config: PretrainedConfig, spec: Spec) -> None:
    """Refuse a whole encoder-decoder (e.g. a `mega2bart build` output) where an encoder alone is expected."""
    if config.model_type == "encoder-decoder":
        raise BuildError(
            f"encoder {os.fspath(spec)!r} is a complete encoder-decoder model (model_type 'encoder-decoder', e.g. a "
            "`mega2bart build` output), but the encoder argument expects an encoder alone (a MEGA checkpoint such as "
            f"{DEFAULT_ENCODER}); to keep training a built model pass it to `mega2bart train --model` instead"
        )


def _check_decoder_type(config: PretrainedConfig, spec: Spec) -> None:
    """Refuse a MEGA model or a whole encoder-decoder where a cross-attention decoder is expected."""
    what = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(config).__name__
    if config.model_type == "mega" and getattr(config, "bidirectional", True):
        raise BuildError(
            f"decoder {what!r} is a bidirectional MEGA model (an encoder, such as the seed checkpoint): pass it as "
            "the encoder (bidirectional=True: its backward EMA would read future summary tokens); the decoder argument expects a BART-family checkpoint with cross-attention "
            f"({DEFAULT_DECODER}, facebook/bart-base, ...) or a MEGA decoder config with bidirectional=False"
        )
    if config.model_type == "encoder-decoder":
        raise BuildError(
            f"decoder {what!r} is a complete encoder-decoder model (model_type 'encoder-decoder', e.g. a "
            "`mega2bart build` output), but the decoder argument expects a BART-family checkpoint "
            f"({DEFAULT_DECODER}, facebook/bart-base, ...)"
        )


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


def _checkpoint_tensor(path: str, revision: str | None, names: tuple[str, ...]) -> tuple[str, torch.Tensor] | None:
    """The first of `names` found in the checkpoint's safetensors file(s), or None."""
    from safetensors import safe_open
    from transformers.utils import cached_file

    files: list[str] = []
    index = cached_file(path, "model.safetensors.index.json", revision=revision, _raise_exceptions_for_missing_entries=False)
    if index:
        weight_map = json.loads(Path(index).read_text())["weight_map"]
        for name in names:
            if name in weight_map:
                shard = cached_file(path, weight_map[name], revision=revision)
                files.append(shard)
                break
    else:
        single = cached_file(path, "model.safetensors", revision=revision, _raise_exceptions_for_missing_entries=False)
        if single:
            files.append(single)
    for file in files:
        with safe_open(file, framework="pt") as handle:
            keys = set(handle.keys())
            for name in names:
                if name in keys:
                    return name, handle.get_tensor(name)
    return None


def _restore_shared_embeddings(
    model: PreTrainedModel, path: str, revision: str | None, missing: list[str]
) -> list[str]:
    """Seq2seq checkpoints saved by transformers 5 keep the decoder's input embeddings only as
    `model.shared.weight` (tied), so loading them as a causal LM leaves `model.decoder.embed_tokens`
    (and the tied `lm_head`) random. Copy them from the checkpoint; return the keys still missing."""
    embedding = model.get_input_embeddings()
    params = dict(model.named_parameters(remove_duplicate=False))
    embedding_keys = [key for key, value in params.items() if value is embedding.weight]
    if not any(key in missing for key in embedding_keys):
        return missing
    found = _checkpoint_tensor(path, revision, ("model.shared.weight", "shared.weight", "model.encoder.embed_tokens.weight"))
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


def load_decoder(spec: Spec) -> tuple[PreTrainedModel, Source, list[tuple[str, int]]]:
    """The decoder as a causal LM with cross-attention (BartForCausalLM for the BART family).

    Returns (model, source, random-init parameters with the "decoder." prefix). Cross-attention that
    a checkpoint lacks (e.g. a decoder-only model) is reported as random-init.
    """
    if isinstance(spec, PreTrainedModel):
        _prepare_decoder_config(spec.config)
        return spec, Source("object", type(spec).__name__, model_class=type(spec).__name__), []
    if isinstance(spec, (PretrainedConfig, Mapping)):
        config = spec if isinstance(spec, PretrainedConfig) else _config_from_mapping(spec, "bart")
        _check_decoder_type(config, spec)
        config = _prepare_decoder_config(config)
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError as exc:
            raise BuildError(f"decoder config {type(config).__name__} has no causal-LM class: {exc}") from exc
        source = Source("config", type(config).__name__, model_class=type(model).__name__)
        return model, source, _all_parameters(model, "decoder.")
    path, source = _resolve(spec, "decoder")
    revision = _pin_revision(path, source)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise _hub_error("decoder", source, exc) from exc
    _check_decoder_type(config, spec)
    config = _prepare_decoder_config(config)
    if source.kind == "local" and not _has_weights(path):
        # a directory holding only config.json (e.g. a MEGA decoder config): a random-init decoder
        logger.info("decoder directory %s holds a config and no weights: building the decoder with random init", path)
        model = AutoModelForCausalLM.from_config(config)
        source.model_class = type(model).__name__
        return model, source, _all_parameters(model, "decoder.")
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
        raise _hub_error("decoder", source, exc) from exc
    except OSError as exc:
        raise _hub_error("decoder", source, exc) from exc
    source.model_class = type(model).__name__
    missing = _restore_shared_embeddings(model, path, revision, list(loading["missing_keys"]))
    return model, source, _missing_parameters(model, missing, "decoder.")


_TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt", "spiece.model",
    "sentencepiece.bpe.model", "tokenizer.model",
)
"""Files of which a tokenizer source needs at least one. Without any, AutoTokenizer makes up a tokenizer of
a handful of special tokens from config.json alone, which would silently tokenize every text wrongly."""


def _has_tokenizer_files(path: str, revision: str | None) -> bool:
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
        from .tokenization import OFFLINE_TOKENIZER_NAME, load_offline_tokenizer

        return load_offline_tokenizer(), Source("offline", OFFLINE_TOKENIZER_NAME)
    path, source = _resolve(spec, "tokenizer")
    revision = _pin_revision(path, source)
    if not _has_tokenizer_files(path, revision):
        found = (
            ", ".join(sorted(os.listdir(path))) if os.path.isdir(path) else "no tokenizer_config.json or tokenizer.json"
        )
        if default_from is not None:
            raise BuildError(
                f"the {default_from} {os.fspath(spec)!r} has no tokenizer files ({found}), so there is no tokenizer to "
                f'default to: pass one explicitly (CLI: --tokenizer ID|DIR|offline; Python: tokenizer="...")'
            )
        raise BuildError(
            f"tokenizer {os.fspath(spec)!r} has no tokenizer files ({found}; expected one of "
            f"{', '.join(_TOKENIZER_FILES)}): pass the directory or Hub id the tokenizer was saved to"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _hub_error("tokenizer", source, exc) from exc
    return tokenizer, source


# ----------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------


def _decoder_layers(decoder: nn.Module) -> nn.ModuleList:
    """The decoder's stack of layers: the longest ModuleList of identical blocks."""
    best: nn.ModuleList | None = None
    for module in decoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise BuildError(f"decoder {type(decoder).__name__} has no stack of layers (nn.ModuleList) to inspect")
    return best


def check_cross_attention(decoder: nn.Module, name: str = "decoder") -> int:
    """Fail unless every decoder layer has a cross-attention block; return the number of layers."""
    layers = _decoder_layers(decoder)
    lacking = []
    for index, layer in enumerate(layers):
        names = {part.lower() for sub_name, _ in layer.named_modules() for part in sub_name.split(".")}
        if not names & set(_CROSS_ATTENTION_NAMES):
            lacking.append(index)
    if lacking:
        raise BuildError(
            f"{name} ({type(decoder).__name__}) has no cross-attention in layer(s) {lacking} of {len(layers)}: "
            "it cannot attend to the encoder. Use a decoder architecture with cross-attention support "
            "(the BART family: facebook/bart-base, facebook/bart-large, distilbart, ...)"
        )
    logger.info("cross-attention present in all %d decoder layers (%s)", len(layers), type(layers[0]).__name__)
    return len(layers)


def check_mega_decoder(config: PretrainedConfig, max_input_length: int | None) -> None:
    """A MEGA decoder must be causal, and its cross-attention bias must cover the inputs (simple bias)."""
    if getattr(config, "model_type", None) != "mega":
        return
    if config.bidirectional:
        raise BuildError(
            "MEGA decoder config has bidirectional=True: its backward EMA would read future summary tokens; "
            "use a decoder config with bidirectional=False"
        )
    if config.relative_positional_bias == "simple":
        bias_range = config.chunk_size if config.chunk_size >= 0 else config.max_positions
        if max_input_length is None or max_input_length > bias_range:
            raise BuildError(
                f"MEGA decoder cross-attention with the simple relative bias covers {bias_range} source positions "
                f"(chunk_size, or max_positions when chunk_size < 0) but inputs may have {max_input_length}: use "
                "relative_positional_bias='rotary' in the decoder config, or --max-input-length <= that range"
            )
    logger.info(
        "decoder: MEGA with gated cross-attention (%s bias): full, unchunked attention of every summary token over "
        "every input token, O(target x source) per layer",
        config.relative_positional_bias,
    )


def _embedding_rows(model: PreTrainedModel) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


def check_vocabularies(
    tokenizer: PreTrainedTokenizerBase, encoder: PreTrainedModel, decoder: PreTrainedModel
) -> dict[str, Any]:
    """Check that tokenizer, encoder and decoder agree on the vocabulary and the special-token ids.

    Embedding tables may have more rows than the tokenizer has tokens (the seed MEGA pads 50265 to
    50304); fewer rows, or special ids that differ, raise `BuildError` naming both sides.
    """
    n_tokens = len(tokenizer)
    rows = {"encoder": _embedding_rows(encoder), "decoder": _embedding_rows(decoder)}
    output = decoder.get_output_embeddings()
    if output is not None:
        rows["decoder LM head"] = int(output.weight.shape[0])
    for part, count in rows.items():
        if count < n_tokens:
            raise BuildError(
                f"vocabulary mismatch: the tokenizer has {n_tokens} tokens but the {part} has {count} embedding rows; "
                "use the tokenizer the model was trained with (e.g. facebook/bart-large's for BART/MEGA checkpoints)"
            )
        if count > n_tokens:
            logger.info("%s has %d embedding rows for %d tokenizer tokens: %d padding rows never indexed",
                        part, count, n_tokens, count - n_tokens)
    ids: dict[str, Any] = {}
    for token in ("bos", "pad", "eos"):
        from_tokenizer = getattr(tokenizer, f"{token}_token_id")
        if from_tokenizer is None:
            raise BuildError(f"the tokenizer has no {token} token; mega2bart needs bos, pad and eos (BART: 0, 1, 2)")
        for part, model in (("encoder", encoder), ("decoder", decoder)):
            from_config = getattr(model.config, f"{token}_token_id", None)
            if from_config is not None and from_config != from_tokenizer:
                raise BuildError(
                    f"special-token mismatch: the tokenizer's {token}_token_id is {from_tokenizer} but the {part} "
                    f"config says {from_config}; the tokenizer and the {part} were not trained together"
                )
        ids[f"{token}_token_id"] = from_tokenizer
    mask = tokenizer.mask_token_id
    if mask is not None and mask >= rows["encoder"]:
        raise BuildError(
            f"the tokenizer's mask id {mask} is outside the encoder's {rows['encoder']} embedding rows"
        )
    ids["mask_token_id"] = mask
    logger.info(
        "vocabulary: tokenizer %d tokens, encoder %d rows, decoder %d rows; special ids agree: bos %s, pad %s, eos %s, mask %s",
        n_tokens, rows["encoder"], rows["decoder"], ids["bos_token_id"], ids["pad_token_id"], ids["eos_token_id"], mask,
    )
    return {"tokenizer_tokens": n_tokens, "embedding_rows": rows, **ids}


def encoder_context_length(encoder: PreTrainedModel) -> int | None:
    """The longest input the encoder takes: MEGA's max_positions, else max_position_embeddings."""
    config = encoder.config
    for field in ("max_positions", "max_position_embeddings", "n_positions"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def parameter_counts(model: Mega2BartModel) -> dict[str, int]:
    """Unique parameters (tied weights once) per part: encoder, decoder, enc_to_dec_proj, total."""
    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = {
        "encoder": count(model.encoder),
        "decoder": count(model.decoder),
        "enc_to_dec_proj": count(getattr(model, "enc_to_dec_proj", None)),
    }
    counts["total"] = count(model)
    return counts


def check_generation_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`DEFAULT_GENERATION` + `overrides`, checked: counts in range and min_new_tokens <= max_new_tokens.

    GenerationConfig accepts min_new_tokens > max_new_tokens, and generation then stops at
    max_new_tokens before EOS is allowed: every prediction comes out empty or cut.
    """
    settings: dict[str, Any] = {**DEFAULT_GENERATION, **(overrides or {})}
    minimum = {"num_beams": 1, "max_new_tokens": 1, "min_new_tokens": 0, "no_repeat_ngram_size": 0}
    for key, low in minimum.items():
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise BuildError(f"generation setting {key} ({value!r}) must be an integer >= {low}")
    low, high = settings.get("min_new_tokens"), settings.get("max_new_tokens")
    if low is not None and high is not None and low > high:
        raise BuildError(
            f"generation setting min_new_tokens ({low}) exceeds max_new_tokens ({high}): every summary would stop "
            f"before it may end; pass min_new_tokens <= {high} or max_new_tokens >= {low} "
            "(CLI: --min-new-tokens / --max-new-tokens)"
        )
    return settings


def default_generation_config(tokenizer: PreTrainedTokenizerBase, decoder_config: PretrainedConfig,
                              overrides: Mapping[str, Any] | None = None) -> GenerationConfig:
    """`DEFAULT_GENERATION` + the special ids; forced BOS when the tokenizer starts targets with `<s>`."""
    settings = check_generation_settings(overrides)
    from .tokenization import special_tokens_around
    starts_with_bos = special_tokens_around(tokenizer).lead[:1] == (tokenizer.bos_token_id,)
    decoder_start = getattr(decoder_config, "decoder_start_token_id", None)
    if decoder_start is None:
        decoder_start = tokenizer.eos_token_id  # BART convention: decoding starts from </s>
    generation = GenerationConfig(
        decoder_start_token_id=decoder_start,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        forced_bos_token_id=tokenizer.bos_token_id if starts_with_bos else None,
        forced_eos_token_id=tokenizer.eos_token_id,
        **settings,
    )
    generation.validate(strict=True)
    return generation


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------


def build_mega2bart(
    encoder: Spec = DEFAULT_ENCODER,
    decoder: Spec = DEFAULT_DECODER,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
    *,
    max_input_length: int | None = None,
    generation: Mapping[str, Any] | None = None,
) -> tuple[Mega2BartModel, PreTrainedTokenizerBase]:
    """Join an encoder (MEGA by default) and a BART-family decoder into one EncoderDecoderModel.

    Args:
        encoder: Hub id (`owner/name[@revision]`), local directory, config/dict (random init) or model.
            Default: the seed MEGA encoder `BEE-spoke-data/mega-encoder-small-16k-v1`.
        decoder: the same kinds; loaded as a causal LM with cross-attention. Default `facebook/bart-large`.
        tokenizer: Hub id, directory, tokenizer object or "offline"; default: the decoder's source when
            it is an id/directory, else the offline BART-layout tokenizer.
        max_input_length: the tokenizer's `model_max_length`; default the encoder's context (16,384 for MEGA).
        generation: overrides of `DEFAULT_GENERATION` (e.g. `{"max_new_tokens": 256}`).

    Returns:
        (model, tokenizer). `model` is a `Mega2BartModel` (an EncoderDecoderModel whose loss is right
        under gradient accumulation); `model.mega2bart_build_info` holds the provenance that
        `save_mega2bart` writes.

    Raises:
        BuildError: unknown id/path, a decoder without cross-attention, vocabularies that disagree.
    """
    default_from = None
    if tokenizer is None:
        default_from = "decoder" if isinstance(decoder, (str, os.PathLike)) else None
        tokenizer = os.fspath(decoder) if isinstance(decoder, (str, os.PathLike)) else OFFLINE_TOKENIZER
    generation = check_generation_settings(generation)
    encoder_model, encoder_source, encoder_random = load_encoder(encoder)
    decoder_model, decoder_source, decoder_random = load_decoder(decoder)
    tok, tokenizer_source = load_tokenizer(tokenizer, default_from=default_from)
    logger.info("encoder: %s (%s)", encoder_source.describe(), type(encoder_model).__name__)
    logger.info("decoder: %s (%s)", decoder_source.describe(), type(decoder_model).__name__)
    logger.info("tokenizer: %s (%s)", tokenizer_source.describe(), type(tok).__name__)

    if encoder_model.get_output_embeddings() is not None:
        raise BuildError(
            f"encoder {type(encoder_model).__name__} has an LM head; load the bare model (AutoModel) as the encoder"
        )
    check_cross_attention(decoder_model)
    vocab = check_vocabularies(tok, encoder_model, decoder_model)
    _warn_if_tokenizer_ids_differ(tok, tokenizer_source, encoder_source, decoder_source)

    model = Mega2BartModel(encoder=encoder_model, decoder=decoder_model)
    random_init = encoder_random + decoder_random
    if hasattr(model, "enc_to_dec_proj"):
        proj = model.enc_to_dec_proj
        logger.info(
            "widths differ (encoder %d, decoder %d): added enc_to_dec_proj Linear(%d -> %d), randomly initialised",
            proj.in_features, proj.out_features, proj.in_features, proj.out_features,
        )
        random_init += _all_parameters(proj, "enc_to_dec_proj.")
    _log_random_init(random_init, encoder_source, decoder_source)

    # top-level ids: EncoderDecoderModel shifts labels with these, and generate() falls back to them
    config = model.config
    config.decoder_start_token_id = getattr(decoder_model.config, "decoder_start_token_id", None)
    if config.decoder_start_token_id is None:
        config.decoder_start_token_id = tok.eos_token_id
    config.pad_token_id = vocab["pad_token_id"]
    config.eos_token_id = vocab["eos_token_id"]
    config.bos_token_id = vocab["bos_token_id"]
    config.vocab_size = _embedding_rows(decoder_model)
    logger.info(
        "top config: decoder_start_token_id %s, pad %s, eos %s, bos %s, vocab_size %s",
        config.decoder_start_token_id, config.pad_token_id, config.eos_token_id, config.bos_token_id, config.vocab_size,
    )

    context = encoder_context_length(encoder_model)
    if max_input_length is None:
        max_input_length = context
    elif context is not None and max_input_length > context:
        raise BuildError(
            f"max_input_length ({max_input_length}) exceeds the encoder's context ({context}); pass at most {context}"
        )
    if max_input_length is not None:
        tok.model_max_length = max_input_length
    check_mega_decoder(decoder_model.config, max_input_length)
    chunk = getattr(encoder_model.config, "chunk_size", None) if getattr(encoder_model.config, "use_chunking", False) else None
    logger.info(
        "tokenizer model_max_length = %s (encoder context %s)%s",
        max_input_length, context,
        f"; inputs of any length are right-padded inside the encoder to a multiple of chunk_size {chunk}" if chunk else "",
    )

    model.generation_config = default_generation_config(tok, decoder_model.config, generation)
    logger.info("generation defaults: %s", _generation_summary(model.generation_config))

    counts = parameter_counts(model)
    logger.info(
        "parameters: encoder %s, decoder %s, enc_to_dec_proj %s, total %s; random-init %s",
        *(f"{counts[k]:,}" for k in ("encoder", "decoder", "enc_to_dec_proj", "total")),
        f"{sum(n for _, n in random_init):,}",
    )
    model.mega2bart_build_info = {
        "mega2bart_version": _version(),
        "encoder": dataclasses.asdict(encoder_source),
        "decoder": dataclasses.asdict(decoder_source),
        "tokenizer": dataclasses.asdict(tokenizer_source),
        "tokenizer_is_real_bart": _is_real_bart(tok),
        "parameters": counts,
        "random_init": [{"name": name, "numel": numel} for name, numel in random_init],
        "random_init_parameters": sum(numel for _, numel in random_init),
        "enc_to_dec_proj": hasattr(model, "enc_to_dec_proj"),
        "vocabulary": vocab,
        "context_length": max_input_length,
        "encoder_chunk_size": chunk,
        "generation": _generation_summary(model.generation_config),
    }
    return model, tok


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
                "(no pretrained weights; for benchmarks and smoke tests)", name,
            )
        return {"encoder": encoder, "decoder": decoder, "tokenizer": OFFLINE_TOKENIZER}
    return {"encoder": preset.encoder, "decoder": preset.decoder, "tokenizer": preset.tokenizer}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mega2bart")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _is_real_bart(tokenizer: PreTrainedTokenizerBase) -> bool:
    from .tokenization import is_real_bart_tokenizer

    return is_real_bart_tokenizer(tokenizer)


def _warn_if_tokenizer_ids_differ(tok: PreTrainedTokenizerBase, tokenizer: Source, *parts: Source) -> None:
    pretrained = [part for part in parts if part.kind in ("hub", "local")]
    if pretrained and not _is_real_bart(tok):
        logger.warning(
            "the tokenizer (%s) does not give facebook/bart-large's ids (\"Hello world\" != [0, 31414, 232, 2]) "
            "but %s pretrained weights: fine for random/tiny models, wrong for BART/MEGA checkpoints",
            tokenizer.describe(), " and ".join(part.describe() for part in pretrained),
        )


def _log_random_init(random_init: list[tuple[str, int]], encoder: Source, decoder: Source) -> None:
    total = sum(numel for _, numel in random_init)
    logger.info("randomly initialised weights: %d tensors, %s parameters", len(random_init), f"{total:,}")
    for part, source in (("encoder.", encoder), ("decoder.", decoder)):
        if source.kind == "config":
            entries = [(n, k) for n, k in random_init if n.startswith(part)]
            logger.info("  %s* (all %d tensors, %s parameters: %s)", part, len(entries),
                        f"{sum(k for _, k in entries):,}", source.describe())
    for name, numel in random_init:
        part = name.split(".", 1)[0] + "."
        source = {"encoder.": encoder, "decoder.": decoder}.get(part)
        if source is None or source.kind != "config":
            note = " (unused by the decoder)" if ".pooler." in f".{name}" else ""
            logger.info("  %s: %s%s", name, f"{numel:,}", note)


def _generation_summary(generation: GenerationConfig) -> dict[str, Any]:
    keys = ("num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size", "length_penalty",
            "early_stopping", "decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id",
            "forced_bos_token_id", "forced_eos_token_id")
    return {key: getattr(generation, key, None) for key in keys}


# ----------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------


def save_mega2bart(
    model: Mega2BartModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> Path:
    """Write weights (safetensors), configs, generation config, tokenizer, MEGA remote code, provenance
    (`mega2bart_build.json`) and a model card (README.md) to `output_dir`, atomically.

    Everything is written to a hidden temporary directory beside `output_dir` and renamed into place
    at the end, so a crash never leaves a directory that looks complete.

    Raises:
        BuildError: `output_dir` exists, is not empty and `overwrite` is False (or it is a file).
    """
    from .modelcard import render_model_card

    target = Path(output_dir).expanduser()
    if target.exists() and not target.is_dir():
        raise BuildError(f"output {str(target)!r} is a file; pass a directory path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise BuildError(
            f"output directory {str(target)!r} is not empty; pass overwrite=True (CLI: --overwrite) or another path"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        (staging / _STAGING_MARKER).write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created": time.time()}) + "\n"
        )
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _write_remote_code(staging)
        info = describe_mega2bart(staging, build_info=getattr(model, "mega2bart_build_info", None))
        info.pop("path")  # the staging directory's name, meaningless once renamed
        (staging / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")
        (staging / "README.md").write_text(render_model_card(info))
        (staging / _STAGING_MARKER).unlink()
        # mkdtemp makes the folder 0700 and safetensors writes the weights 0600 (through a temporary file):
        # give every entry the modes a plain mkdir / open would, under the current umask
        for path in (staging, *staging.rglob("*")):
            if not path.is_symlink():
                os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("saved mega2bart model to %s", target)
    return target


def ship_build_files(target: str | os.PathLike, source: str | os.PathLike | None = None,
                     training: Mapping[str, Any] | None = None) -> None:
    """Make a directory saved by the Trainer (final model or checkpoint) self-contained like a built one:
    write the MEGA remote code (+ `auto_map` in config.json) and copy the provenance file of `source`,
    the model it was trained from, with `training` appended to its "training" list.

    Without this, `AutoModelForSeq2SeqLM.from_pretrained(target, trust_remote_code=True)` needs
    mega2bart installed, and `mega2bart info` cannot say which weights started random.
    """
    target = Path(target)
    _write_remote_code(target)
    provenance = Path(source).expanduser() / BUILD_INFO_FILE if source is not None else None
    if provenance is None or not provenance.is_file():
        logger.info("%s has no %s: %s gets the remote code only", source, BUILD_INFO_FILE, target)
        return
    info = json.loads(provenance.read_text())
    if training is not None:
        info["training"] = [*info.get("training", []), dict(training)]
    (target / BUILD_INFO_FILE).write_text(json.dumps(info, indent=2, default=str) + "\n")


_STAGING_MARKER = ".mega2bart-staging.json"
"""Written first into a staging folder: who owns it (pid, host, time). Deleted before the rename."""
STALE_STAGING_AGE_S = 7 * 24 * 3600
"""A staging folder this old is stale even when its process cannot be checked (another host)."""


def _process_is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: assume running
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.partial-*` staging folders that killed saves of `target` left beside it.

    Only folders holding `save_mega2bart`'s owner marker are touched, and only when their process is
    gone (same host) or they are older than `STALE_STAGING_AGE_S`. Returns the folders removed.
    """
    target = Path(target).expanduser()
    if not target.parent.is_dir():
        return []
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
        marker = candidate / _STAGING_MARKER
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        try:
            owner = json.loads(marker.read_text())
            pid, host, created = int(owner["pid"]), str(owner["host"]), float(owner["created"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning("left alone %s: it has no readable mega2bart owner marker; delete it by hand if stale", candidate)
            continue
        same_host = host == socket.gethostname()
        dead = same_host and not _process_is_running(pid)
        if dead or time.time() - created > STALE_STAGING_AGE_S:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            logger.info("removed stale staging folder %s (pid %d on %s %s)", candidate, pid, host,
                        "has exited" if dead else f"started over {STALE_STAGING_AGE_S // 86400} days ago")
    return removed


def _replace_directory(staging: Path, target: Path) -> None:
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(trash / "old")  # the old directory disappears only once the new one is complete
        try:
            staging.rename(target)
        except BaseException:
            (trash / "old").rename(target)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(target)


def _write_remote_code(directory: Path) -> None:
    """Copy the MEGA files + the EncoderDecoder glue, and point `auto_map` at them in config.json."""
    package = Path(__file__).resolve().parent
    mega_dir = package / "models" / "mega"
    for name in ("configuration_mega.py", "modeling_mega.py"):
        shutil.copyfile(mega_dir / name, directory / name)
    glue = (package / "modeling_mega2bart.py").read_text()
    if _REMOTE_MARKER not in glue:
        raise RuntimeError(f"{_REMOTE_MARKER!r} missing from modeling_mega2bart.py")
    (directory / "modeling_mega2bart.py").write_text(glue.replace(_REMOTE_MARKER, _REMOTE_REGISTRATION))

    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = {
        "AutoConfig": "modeling_mega2bart.Mega2BartConfig",
        "AutoModelForSeq2SeqLM": "modeling_mega2bart.Mega2BartModel",
    }
    if config.get("encoder", {}).get("model_type") == "mega":
        config["encoder"]["auto_map"] = {
            "AutoConfig": "configuration_mega.MegaConfig",
            "AutoModel": "modeling_mega.MegaModel",
        }
    staged = config_path.with_name(config_path.name + ".tmp")  # a crash must not leave half a config.json
    staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(staged, config_path)


def load_mega2bart(model_dir: str | os.PathLike, **kwargs: Any) -> tuple[Mega2BartModel, PreTrainedTokenizerBase]:
    """Load a saved mega2bart directory as a `Mega2BartModel` + its tokenizer.

    `Mega2BartModel` has the GA-correct loss (training) and shared-encoder beam search (inference).
    `AutoModelForSeq2SeqLM.from_pretrained(model_dir)` (after `import mega2bart`) gives the plain
    EncoderDecoderModel with the same weights and transformers' stock generation.
    """
    path, source = _resolve(model_dir, "model")
    try:
        model = Mega2BartModel.from_pretrained(path, revision=source.revision, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=source.revision)
    except (OSError, ValueError) as exc:
        raise _hub_error("model", source, exc) from exc
    return model, tokenizer


# ----------------------------------------------------------------------------------------------
# describe (`mega2bart info`)
# ----------------------------------------------------------------------------------------------


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


def describe_mega2bart(model_dir: str | os.PathLike, build_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything `mega2bart info` shows, from the files only (the model is not instantiated).

    Architecture, parameters per part (from the safetensors headers; tied weights once), random-init
    weights, context length, generation settings, and provenance when `mega2bart_build.json` exists.
    """
    directory = Path(model_dir).expanduser()
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise BuildError(f"{str(directory)!r} is not a model directory (no config.json); pass a `mega2bart build` output")
    config = json.loads(config_path.read_text())
    if build_info is None and (directory / BUILD_INFO_FILE).is_file():
        build_info = json.loads((directory / BUILD_INFO_FILE).read_text())
    build_info = dict(build_info or {})
    encoder, decoder = config.get("encoder", {}), config.get("decoder", {})
    if config.get("model_type") != "encoder-decoder" or not encoder or not decoder:
        raise BuildError(
            f"{str(directory)!r} holds a {config.get('model_type')!r} model, not an encoder-decoder built by mega2bart"
        )
    generation = {}
    if (directory / "generation_config.json").is_file():
        generation = json.loads((directory / "generation_config.json").read_text())
        generation.pop("transformers_version", None)
    tokenizer_config = {}
    if (directory / "tokenizer_config.json").is_file():
        tokenizer_config = json.loads((directory / "tokenizer_config.json").read_text())
    counts = _safetensors_counts(directory) or build_info.get("parameters")
    return {
        **build_info,
        "architecture": {
            "model": "EncoderDecoderModel",
            "encoder": {
                "model_type": encoder.get("model_type"),
                "hidden_size": encoder.get("hidden_size"),
                "layers": encoder.get("num_hidden_layers"),
                "chunk_size": encoder.get("chunk_size") if encoder.get("use_chunking") else None,
                "vocab_size": encoder.get("vocab_size"),
            },
            "decoder": {
                "model_type": decoder.get("model_type"),
                "hidden_size": decoder.get("d_model", decoder.get("hidden_size")),
                "layers": decoder.get("decoder_layers", decoder.get("num_hidden_layers")),
                "vocab_size": decoder.get("vocab_size"),
                "max_target_positions": decoder.get("max_position_embeddings"),
            },
            "enc_to_dec_proj": encoder.get("hidden_size") != decoder.get("d_model", decoder.get("hidden_size")),
        },
        "parameters": counts,
        "context_length": tokenizer_config.get("model_max_length", build_info.get("context_length")),
        "generation": generation or build_info.get("generation", {}),
        "special_tokens": {
            "decoder_start_token_id": config.get("decoder_start_token_id"),
            "pad_token_id": config.get("pad_token_id"),
            "eos_token_id": config.get("eos_token_id"),
            "bos_token_id": config.get("bos_token_id"),
        },
        "remote_code": all((directory / name).is_file() for name in REMOTE_CODE_FILES),
        "path": str(directory.resolve()),
    }


__all__ = [
    "BUILD_INFO_FILE",
    "DEFAULT_GENERATION",
    "BuildError",
    "Source",
    "build_mega2bart",
    "check_cross_attention",
    "check_generation_settings",
    "check_vocabularies",
    "default_generation_config",
    "describe_mega2bart",
    "load_decoder",
    "load_encoder",
    "load_mega2bart",
    "load_tokenizer",
    "parameter_counts",
    "preset_kwargs",
    "remove_stale_staging",
    "save_mega2bart",
    "ship_build_files",
]
