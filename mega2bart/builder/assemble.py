"""`build_mega2bart`: load the parts, check that they fit, join them, set the ids, context and generation
defaults, and record the provenance; each step is one function below, and each logs what it decided.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..modeling_mega2bart import Mega2BartModel
from ..presets import DEFAULT_DECODER, DEFAULT_ENCODER, OFFLINE_TOKENIZER
from .checks import (
    check_bare_encoder,
    check_context_length,
    check_cross_attention,
    check_mega_decoder,
    check_vocabularies,
    embedding_rows,
    encoder_context_length,
    is_real_bart,
    warn_if_tokenizer_ids_differ,
)
from .fingerprint import model_fingerprint
from .generation import check_generation_settings, default_generation_config, generation_summary
from .loading import LoadedPart, all_parameters, load_decoder, load_encoder, load_tokenizer
from .provenance import BuildInfo, RandomInitTensor
from .sources import Source, Spec

logger = logging.getLogger(__name__)

DEFAULT_SEED = 0
"""`build_mega2bart`'s (and `mega2bart build --seed`'s) default seed for the random-init weights."""


def build_mega2bart(
    encoder: Spec = DEFAULT_ENCODER,
    decoder: Spec = DEFAULT_DECODER,
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None = None,
    *,
    max_input_length: int | None = None,
    generation: Mapping[str, Any] | None = None,
    seed: int = DEFAULT_SEED,
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
        seed: the torch seed every random-init weight is drawn with (the same arguments give the same weights);
            the caller's random state is restored afterwards.

    Returns:
        (model, tokenizer). `model` is a `Mega2BartModel` (an EncoderDecoderModel whose loss is right
        under gradient accumulation); `model.mega2bart_build_info` is the `BuildInfo` (provenance) that
        `save_mega2bart` writes.

    Raises:
        BuildError: unknown id/path, a decoder without cross-attention, vocabularies that disagree.
    """
    tokenizer, default_from = _tokenizer_spec(tokenizer, decoder)
    generation = check_generation_settings(generation)
    with torch.random.fork_rng(devices=[]):  # CPU: the build's random weights follow `seed` alone
        torch.manual_seed(seed)
        encoder_part, decoder_part = load_encoder(encoder), load_decoder(decoder)
        tok, tokenizer_source = load_tokenizer(tokenizer, default_from=default_from)
        _log_sources(encoder_part, decoder_part, tok, tokenizer_source)
        vocabulary = _check_parts(tok, tokenizer_source, encoder_part, decoder_part)
        model, random_init = _join(encoder_part, decoder_part)
    _set_special_ids(model.config, decoder_part.model, tok, vocabulary)
    context_length = _set_context_length(tok, encoder_part.model, decoder_part.model.config, max_input_length)
    model.generation_config = default_generation_config(tok, decoder_part.model.config, generation)
    logger.info("generation defaults: %s", generation_summary(model.generation_config))
    info = _build_info(
        model, tok, encoder_part, decoder_part, tokenizer_source, random_init, vocabulary, context_length, seed
    )
    _log_parameters(info)
    model.mega2bart_build_info = info
    model.config.mega2bart_build = info.to_dict()  # in config.json: survives save_pretrained / Trainer.save_model
    return model, tok


def _tokenizer_spec(
    tokenizer: str | os.PathLike | PreTrainedTokenizerBase | None, decoder: Spec
) -> tuple[str | os.PathLike | PreTrainedTokenizerBase, str | None]:
    """(the tokenizer to load, the part it defaults from): without one, the decoder's own source (an id or
    directory), else the offline tokenizer."""
    if tokenizer is not None:
        return tokenizer, None
    if isinstance(decoder, (str, os.PathLike)):
        return os.fspath(decoder), "decoder"
    return OFFLINE_TOKENIZER, None


def _log_sources(encoder: LoadedPart, decoder: LoadedPart, tokenizer: PreTrainedTokenizerBase, source: Source) -> None:
    logger.info("encoder %s: %s", type(encoder.model).__name__, encoder.source.describe())
    logger.info("decoder %s: %s", type(decoder.model).__name__, decoder.source.describe())
    logger.info("tokenizer %s: %s", type(tokenizer).__name__, source.describe())


def _check_parts(
    tokenizer: PreTrainedTokenizerBase, tokenizer_source: Source, encoder: LoadedPart, decoder: LoadedPart
) -> dict[str, Any]:
    """Each part in its role, and one vocabulary for all three; returns what `check_vocabularies` found."""
    check_bare_encoder(encoder.model)
    check_cross_attention(decoder.model)
    vocabulary = check_vocabularies(tokenizer, encoder.model, decoder.model)
    warn_if_tokenizer_ids_differ(tokenizer, tokenizer_source, encoder.source, decoder.source)
    return vocabulary


def _join(encoder: LoadedPart, decoder: LoadedPart) -> tuple[Mega2BartModel, list[RandomInitTensor]]:
    """The EncoderDecoderModel, and every random-init weight: the parts' and a new `enc_to_dec_proj`'s."""
    model = Mega2BartModel(encoder=encoder.model, decoder=decoder.model)
    random_init = encoder.random_init + decoder.random_init
    projection: nn.Linear | None = getattr(model, "enc_to_dec_proj", None)
    if projection is not None:
        logger.info(
            "widths differ (encoder %d, decoder %d): added enc_to_dec_proj Linear(%d -> %d), randomly initialised",
            projection.in_features,
            projection.out_features,
            projection.in_features,
            projection.out_features,
        )
        random_init += all_parameters(projection, "enc_to_dec_proj.")
    return model, random_init


def _set_special_ids(
    config: PretrainedConfig,
    decoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    vocabulary: Mapping[str, Any],
) -> None:
    """Top-level ids: EncoderDecoderModel shifts labels with these, and generate() falls back to them."""
    config.decoder_start_token_id = getattr(decoder.config, "decoder_start_token_id", None)
    if config.decoder_start_token_id is None:
        config.decoder_start_token_id = tokenizer.eos_token_id
    config.pad_token_id = vocabulary["pad_token_id"]
    config.eos_token_id = vocabulary["eos_token_id"]
    config.bos_token_id = vocabulary["bos_token_id"]
    config.vocab_size = embedding_rows(decoder)
    logger.info(
        "top config: decoder_start_token_id %s, pad %s, eos %s, bos %s, vocab_size %s",
        config.decoder_start_token_id,
        config.pad_token_id,
        config.eos_token_id,
        config.bos_token_id,
        config.vocab_size,
    )


def _encoder_chunk_size(encoder: PreTrainedModel) -> int | None:
    config = encoder.config
    return getattr(config, "chunk_size", None) if getattr(config, "use_chunking", False) else None


def _set_context_length(
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel,
    decoder_config: PretrainedConfig,
    max_input_length: int | None,
) -> int | None:
    """Set the tokenizer's `model_max_length` (default: the encoder's context) once the decoder can take it."""
    context = encoder_context_length(encoder)
    max_input_length = check_context_length(max_input_length, context)
    if max_input_length is not None:
        tokenizer.model_max_length = max_input_length
    check_mega_decoder(decoder_config, max_input_length)
    chunk = _encoder_chunk_size(encoder)
    padding = f"; inputs of any length are right-padded inside the encoder to a multiple of chunk_size {chunk}"
    logger.info(
        "tokenizer model_max_length = %s (encoder context %s)%s", max_input_length, context, padding if chunk else ""
    )
    return max_input_length


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


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("mega2bart")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def _encoder_ema_init(encoder: LoadedPart) -> str | None:
    """How a MEGA encoder's EMA time scales were set (BuildInfo.encoder_ema_init); None for other encoders."""
    config = encoder.model.config
    if getattr(config, "model_type", None) != "mega" or encoder.source.kind == "object":
        return None  # an object passed in: its weights are whatever the caller made them
    if encoder.source.kind != "config":
        return "checkpoint: the EMA weights were loaded, not initialised"
    if getattr(config, "ema_init", None) == "long":
        reach = config.ema_max_reach or config.max_positions
        return f"long: reaches log-spaced from {config.ema_min_reach:g} to {reach:,} tokens"
    return "port: the 4.x init (every dimension forgets within ~4 tokens)"


def _build_info(
    model: Mega2BartModel,
    tokenizer: PreTrainedTokenizerBase,
    encoder: LoadedPart,
    decoder: LoadedPart,
    tokenizer_source: Source,
    random_init: list[RandomInitTensor],
    vocabulary: dict[str, Any],
    context_length: int | None,
    seed: int | None = None,
) -> BuildInfo:
    return BuildInfo(
        seed=seed,
        mega2bart_version=_version(),
        encoder=encoder.source,
        decoder=decoder.source,
        tokenizer=tokenizer_source,
        tokenizer_is_real_bart=is_real_bart(tokenizer),
        parameters=parameter_counts(model),
        random_init=random_init,
        enc_to_dec_proj=hasattr(model, "enc_to_dec_proj"),
        vocabulary=vocabulary,
        context_length=context_length,
        encoder_chunk_size=_encoder_chunk_size(encoder.model),
        encoder_ema_init=_encoder_ema_init(encoder),
        generation=generation_summary(model.generation_config),
        # a build on the meta device (shapes only) has no values to fingerprint
        weights=None if any(p.is_meta for p in model.parameters()) else model_fingerprint(model).to_dict(),
    )


def _log_parameters(info: BuildInfo) -> None:
    counts = info.parameters
    logger.info(
        "parameters: encoder %s, decoder %s, enc_to_dec_proj %s, total %s",
        *(f"{counts[k]:,}" for k in ("encoder", "decoder", "enc_to_dec_proj", "total")),
    )
    summary, *details = info.random_init_lines()
    logger.info("randomly initialised weights: %s", summary)
    for line in details:
        logger.info("%s", line)


__all__ = ["DEFAULT_SEED", "build_mega2bart", "parameter_counts"]
