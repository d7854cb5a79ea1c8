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
20-token fallback that cuts summaries short (transformers #10032, #13424).

The lengths are given in new tokens here (and by `build --max-new-tokens/--min-new-tokens`) but saved as
`max_length`/`min_length` (`generation_lengths`), as BART's summarisation checkpoints save theirs: a caller's
`max_length` (Seq2SeqTrainer's `generation_max_length`, `generate(max_length=N)`) then replaces the default,
where a saved `max_new_tokens` would win over it, with transformers' "Both `max_new_tokens` and `max_length`"
warning."""

DECODER_PREFIX = 1
"""Decoder positions before the first new token (the decoder start token): `max_length` counts them."""

_SUMMARY_KEYS = (
    "num_beams",
    "max_length",
    "min_length",
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


# the generation settings that make no sense outside these ranges, wherever they are given (build flags,
# eval/summarize flags, a YAML config, a saved generation_config.json): integer counts and their minimum
_COUNT_MINIMUM = {
    "num_beams": 1,
    "num_beam_groups": 1,
    "num_return_sequences": 1,
    "max_new_tokens": 1,
    "min_new_tokens": 0,
    "max_length": 1,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "top_k": 0,
}


def generation_problems(settings: Mapping[str, Any]) -> list[str]:
    """What is wrong with `settings` (generation keyword arguments or a generation config's dict), one phrase
    each: counts below their minimum or not integers, a length penalty that is not a finite number, a repetition
    penalty that is not positive, top_p outside (0, 1], temperature <= 0 with sampling, minimum above maximum."""
    import math

    problems = []
    for key, low in _COUNT_MINIMUM.items():
        value = settings.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            problems.append(f"{key} ({value!r}) must be an integer >= {low}")

    def number(key: str) -> float | None:
        value = settings.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            problems.append(f"{key} ({value!r}) must be a finite number")
            return None
        return float(value)

    number("length_penalty")
    repetition = number("repetition_penalty")
    if repetition is not None and repetition <= 0:
        problems.append(f"repetition_penalty ({repetition!r}) must be > 0")
    top_p = number("top_p")
    if top_p is not None and not 0 < top_p <= 1:
        problems.append(f"top_p ({top_p!r}) must be in (0, 1]")
    temperature = number("temperature")
    if temperature is not None and temperature <= 0 and settings.get("do_sample"):
        problems.append(f"temperature ({temperature!r}) must be > 0 with do_sample")
    for low_key, high_key in (("min_new_tokens", "max_new_tokens"), ("min_length", "max_length")):
        low, high = settings.get(low_key), settings.get(high_key)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{low_key} ({low}) exceeds {high_key} ({high})")
    return problems


def check_generation_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """`DEFAULT_GENERATION` + `overrides`, checked: counts in range and min_new_tokens <= max_new_tokens.

    GenerationConfig accepts min_new_tokens > max_new_tokens, and generation then stops at
    max_new_tokens before EOS is allowed: every prediction comes out empty or cut.
    """
    settings: dict[str, Any] = {**DEFAULT_GENERATION, **(overrides or {})}
    for problem in generation_problems(settings):
        low, high = settings.get("min_new_tokens"), settings.get("max_new_tokens")
        if problem.startswith("min_new_tokens (") and " exceeds " in problem:  # the one the CLI can fix, say how
            raise BuildError(
                f"generation setting min_new_tokens ({low}) exceeds max_new_tokens ({high}): every summary would "
                f"stop before it may end; pass min_new_tokens <= {high} or max_new_tokens >= {low} "
                "(CLI: --min-new-tokens / --max-new-tokens)"
            )
        raise BuildError(f"generation setting {problem}")
    return settings


def generation_lengths(max_new_tokens: int | None, min_new_tokens: int | None) -> dict[str, int]:
    """New-token limits as the `max_length`/`min_length` that `generate` counts (decoder start included);
    None leaves a limit out."""
    lengths = {"max_length": max_new_tokens, "min_length": min_new_tokens}
    return {key: value + DECODER_PREFIX for key, value in lengths.items() if value is not None}


def new_token_limits(generation: GenerationConfig) -> tuple[int | None, int | None]:
    """(max, min) new tokens of a generation config, whichever form it stores them in
    (`max_length`/`min_length` since issue 26, `max_new_tokens`/`min_new_tokens` in earlier builds)."""

    def limit(new_tokens: int | None, length: int | None) -> int | None:
        if new_tokens is not None:
            return new_tokens
        return None if length is None else max(length - DECODER_PREFIX, 0)

    return (
        limit(generation.max_new_tokens, generation.max_length),
        limit(generation.min_new_tokens, generation.min_length),
    )


def default_generation_config(
    tokenizer: PreTrainedTokenizerBase, decoder_config: PretrainedConfig, overrides: Mapping[str, Any] | None = None
) -> GenerationConfig:
    """`DEFAULT_GENERATION` + the special ids; forced BOS when the tokenizer starts targets with `<s>`.
    The new-token lengths are stored as `max_length`/`min_length` (see `DEFAULT_GENERATION`)."""
    settings = check_generation_settings(overrides)
    settings.update(generation_lengths(settings.pop("max_new_tokens", None), settings.pop("min_new_tokens", None)))
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


__all__ = [
    "DECODER_PREFIX",
    "DEFAULT_GENERATION",
    "check_generation_settings",
    "default_generation_config",
    "generation_lengths",
    "generation_problems",
    "generation_summary",
    "new_token_limits",
]
