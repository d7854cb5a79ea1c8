"""The generation defaults a built model is saved with (`generation_config.json`), and their checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import GenerationConfig, PretrainedConfig, PreTrainedTokenizerBase

from ..tokenization import special_tokens_around
from .errors import BuildError

DEFAULT_GENERATION: dict[str, Any] = {
    "num_beams": 4,
    "max_new_tokens": 512,
    "min_new_tokens": 32,
    "no_repeat_ngram_size": 3,
    "length_penalty": 2.0,
    "early_stopping": True,
}
"""Beam search suited to long-document summaries (LED/arXiv-style settings), instead of the
20-token fallback that cuts summaries short (transformers #10032, #13424)."""

_SUMMARY_KEYS = (
    "num_beams",
    "max_new_tokens",
    "min_new_tokens",
    "no_repeat_ngram_size",
    "length_penalty",
    "early_stopping",
    "decoder_start_token_id",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)


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


def default_generation_config(
    tokenizer: PreTrainedTokenizerBase, decoder_config: PretrainedConfig, overrides: Mapping[str, Any] | None = None
) -> GenerationConfig:
    """`DEFAULT_GENERATION` + the special ids; forced BOS when the tokenizer starts targets with `<s>`."""
    settings = check_generation_settings(overrides)
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


def generation_summary(generation: GenerationConfig) -> dict[str, Any]:
    """The settings a summary depends on (recorded in the provenance and logged)."""
    return {key: getattr(generation, key, None) for key in _SUMMARY_KEYS}


__all__ = ["DEFAULT_GENERATION", "check_generation_settings", "default_generation_config", "generation_summary"]
