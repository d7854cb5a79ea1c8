"""Checks that the parts fit together, each failing with a `BuildError` that names both sides and the fix:
the role of each checkpoint (an encoder is not a whole model, a decoder is causal and has cross-attention),
vocabulary sizes and special-token ids, and the input length against the encoder's context.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from ..presets import DEFAULT_DECODER, DEFAULT_ENCODER
from .errors import BuildError
from .sources import Source, Spec

logger = logging.getLogger(__name__)

# Module-name components that mark a cross-attention block in the decoder families that support it
# (BART/mBART/Marian/PLBart: encoder_attn, BERT/RoBERTa/GPT-2/ELECTRA: crossattention, others: cross_attn).
_CROSS_ATTENTION_NAMES = ("encoder_attn", "crossattention", "cross_attn", "cross_attention", "encdecattention")


# ----------------------------------------------------------------------------------------------
# roles
# ----------------------------------------------------------------------------------------------


def check_encoder_type(config: PretrainedConfig, spec: Spec) -> None:
    """Refuse a whole encoder-decoder (e.g. a `mega2bart build` output) where an encoder alone is expected."""
    if config.model_type == "encoder-decoder":
        raise BuildError(
            f"encoder {os.fspath(spec)!r} is a complete encoder-decoder model (model_type 'encoder-decoder', e.g. a "
            "`mega2bart build` output), but the encoder argument expects an encoder alone (a MEGA checkpoint such as "
            f"{DEFAULT_ENCODER}); to keep training a built model pass it to `mega2bart train --model` instead"
        )


def check_decoder_type(config: PretrainedConfig, spec: Spec) -> None:
    """Refuse a MEGA model or a whole encoder-decoder where a cross-attention decoder is expected."""
    what = os.fspath(spec) if isinstance(spec, (str, os.PathLike)) else type(config).__name__
    if config.model_type == "mega" and getattr(config, "bidirectional", True):
        raise BuildError(
            f"decoder {what!r} is a bidirectional MEGA model (an encoder, such as the seed checkpoint): pass it as "
            "the encoder (bidirectional=True: its backward EMA would read future summary tokens); the decoder "
            "argument expects a BART-family checkpoint with cross-attention "
            f"({DEFAULT_DECODER}, facebook/bart-base, ...) or a MEGA decoder config with bidirectional=False"
        )
    if config.model_type == "encoder-decoder":
        raise BuildError(
            f"decoder {what!r} is a complete encoder-decoder model (model_type 'encoder-decoder', e.g. a "
            "`mega2bart build` output), but the decoder argument expects a BART-family checkpoint "
            f"({DEFAULT_DECODER}, facebook/bart-base, ...)"
        )


def check_bare_encoder(encoder: PreTrainedModel) -> None:
    """Refuse an encoder with an LM head: the decoder reads hidden states, not vocabulary logits."""
    if encoder.get_output_embeddings() is not None:
        raise BuildError(
            f"encoder {type(encoder).__name__} has an LM head; load the bare model (AutoModel) as the encoder"
        )


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


# ----------------------------------------------------------------------------------------------
# vocabulary and tokenizer
# ----------------------------------------------------------------------------------------------


def embedding_rows(model: PreTrainedModel) -> int:
    """Rows of the model's input embedding table (may exceed the tokenizer's tokens: padding rows)."""
    return int(model.get_input_embeddings().weight.shape[0])


def vocabulary_rows(parts: dict[str, PreTrainedModel]) -> dict[str, int]:
    """{part: rows} of each part's input embeddings, and of its LM head where it has one ("PART LM head")."""
    rows = {}
    for part, model in parts.items():
        rows[part] = embedding_rows(model)
        output = model.get_output_embeddings()
        if output is not None:
            rows[f"{part} LM head"] = int(output.weight.shape[0])
    return rows


def check_rows_hold_tokenizer(tokenizer: PreTrainedTokenizerBase, rows: dict[str, int], what: str, fix: str) -> None:
    """Raise `BuildError` when a table of `rows` ({part: rows}) has fewer rows than the tokenizer has tokens:
    a token id past its end would stop a run with an IndexError. `what` starts the message, `fix` ends it."""
    n_tokens = len(tokenizer)
    for part, count in rows.items():
        if count < n_tokens:
            raise BuildError(
                f"{what}: the tokenizer has {n_tokens} tokens but the {part} has {count} embedding rows "
                f"(ids {count} to {n_tokens - 1} have none); {fix}"
            )


def check_vocabularies(
    tokenizer: PreTrainedTokenizerBase, encoder: PreTrainedModel, decoder: PreTrainedModel
) -> dict[str, Any]:
    """Check that tokenizer, encoder and decoder agree on the vocabulary and the special-token ids.

    Embedding tables may have more rows than the tokenizer has tokens (the seed MEGA pads 50265 to
    50304); fewer rows, or special ids that differ, raise `BuildError` naming both sides.
    Returns what was checked: `tokenizer_tokens`, `embedding_rows` per part and the special ids.
    """
    n_tokens = len(tokenizer)
    rows = vocabulary_rows({"encoder": encoder, "decoder": decoder})
    check_rows_hold_tokenizer(
        tokenizer,
        rows,
        "vocabulary mismatch",
        "use the tokenizer the model was trained with (e.g. facebook/bart-large's for BART/MEGA checkpoints)",
    )
    for part, count in rows.items():
        if count > n_tokens:
            logger.info(
                "%s has %d embedding rows for %d tokenizer tokens: %d padding rows never indexed",
                part,
                count,
                n_tokens,
                count - n_tokens,
            )
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
        raise BuildError(f"the tokenizer's mask id {mask} is outside the encoder's {rows['encoder']} embedding rows")
    ids["mask_token_id"] = mask
    logger.info(
        "vocabulary: tokenizer %d tokens, encoder %d rows, decoder %d rows; "
        "special ids agree: bos %s, pad %s, eos %s, mask %s",
        n_tokens,
        rows["encoder"],
        rows["decoder"],
        ids["bos_token_id"],
        ids["pad_token_id"],
        ids["eos_token_id"],
        mask,
    )
    return {"tokenizer_tokens": n_tokens, "embedding_rows": rows, **ids}


def is_real_bart(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when `tokenizer` gives facebook/bart-large's ids (the offline tokenizer does not)."""
    from ..tokenization import is_real_bart_tokenizer

    return is_real_bart_tokenizer(tokenizer)


def warn_if_tokenizer_ids_differ(tokenizer: PreTrainedTokenizerBase, source: Source, *parts: Source) -> None:
    """Warn when pretrained parts meet a tokenizer without BART's ids (fine for random init, wrong otherwise)."""
    pretrained = [part for part in parts if part.kind in ("hub", "local")]
    if pretrained and not is_real_bart(tokenizer):
        logger.warning(
            'the tokenizer (%s) does not give facebook/bart-large\'s ids ("Hello world" != [0, 31414, 232, 2]) '
            "but %s pretrained weights: fine for random/tiny models, wrong for BART/MEGA checkpoints",
            source.describe(),
            " and ".join(part.describe() for part in pretrained),
        )


# ----------------------------------------------------------------------------------------------
# context length
# ----------------------------------------------------------------------------------------------


def encoder_context_length(encoder: PreTrainedModel) -> int | None:
    """The longest input the encoder takes: MEGA's max_positions, else max_position_embeddings."""
    config = encoder.config
    for field in ("max_positions", "max_position_embeddings", "n_positions"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context_length(max_input_length: int | None, context: int | None) -> int | None:
    """The tokenizer's `model_max_length`: `max_input_length`, by default the encoder's `context`; never longer."""
    if max_input_length is None:
        return context
    if context is not None and max_input_length > context:
        raise BuildError(
            f"max_input_length ({max_input_length}) exceeds the encoder's context ({context}); pass at most {context}"
        )
    return max_input_length


__all__ = [
    "check_bare_encoder",
    "check_rows_hold_tokenizer",
    "check_context_length",
    "check_cross_attention",
    "check_decoder_type",
    "check_encoder_type",
    "check_mega_decoder",
    "check_vocabularies",
    "embedding_rows",
    "vocabulary_rows",
    "encoder_context_length",
    "is_real_bart",
    "warn_if_tokenizer_ids_differ",
]
