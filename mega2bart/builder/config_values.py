"""The values of a model folder's `config.json` checked before anything is built from them: every command that
reads a model (plan, info, summarize, eval, train, build --encoder/--decoder, pretrain, fill-mask) calls
`check_config_values` (through `check_model_files`), so a field of the wrong type or out of range is one
`BuildError` naming the file, the field, its value and the fix, instead of a traceback from inside a model's
constructor (`hidden_size: "abc"`), an empty model (`num_hidden_layers: 0`) or an index error at run time (a
token id outside the vocabulary).

The rules are by field name, so they hold in any section: a mega2bart model's `encoder` and `decoder` sections
(each an object with a `model_type`), or a bare MEGA or BART folder's config.json. A MEGA section is then
checked by `MegaConfig` itself, which owns the rules that tie fields together.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from .errors import BuildError

# whole numbers >= 1: sizes, layer and head counts, lengths (MEGA, BART family, and the usual transformers names)
_POSITIVE = {
    "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "ema_projection_size",
    "shared_representation_size", "nffn_hidden_size", "max_positions", "d_model", "encoder_layers",
    "decoder_layers", "encoder_attention_heads", "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
    "max_position_embeddings", "num_layers", "num_decoder_layers", "num_attention_heads", "num_heads", "d_ff",
    "d_kv", "type_vocab_size",
}  # fmt: skip
# probabilities: a number in [0, 1) (None allowed where the field says "use the default")
_PROBABILITIES = {
    "dropout", "attention_dropout", "activation_dropout", "classifier_dropout", "dropout_prob",
    "hidden_dropout_prob", "attention_probs_dropout_prob", "nffn_activation_dropout_prob", "encoder_layerdrop",
    "decoder_layerdrop",
}  # fmt: skip
_FLAGS = {
    "use_chunking", "bidirectional", "normalize_before_mega", "norm_affine", "use_feature_dropout",
    "use_normalized_ffn", "normalize_before_ffn", "add_token_type_embeddings", "is_decoder", "add_cross_attention",
    "tie_word_embeddings", "use_cache", "scale_embedding", "is_encoder_decoder", "use_pooler", "legacy_rmsnorm",
    "add_lm_hidden_dense_layer",
}  # fmt: skip
_TOKEN_IDS = (
    "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "forced_bos_token_id",
    "forced_eos_token_id",
)  # fmt: skip
# (width, heads): the width must split evenly over the heads
_HEADS = (("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads"))
_SECTIONS = ("encoder", "decoder")


def check_config_values(config: Mapping[str, Any], where: str) -> None:
    """Raise `BuildError` for the first value of the parsed config.json `config` that no model can be built
    from; `where` names the file in the message ("model 'out/m': config.json")."""
    if config.get("model_type") == "encoder-decoder" or any(section in config for section in _SECTIONS):
        for section in _SECTIONS:
            value = config.get(section)
            if not isinstance(value, Mapping):
                shown = "missing" if section not in config else f"a JSON {_json_type(value)} ({_short(value)})"
                _fail(
                    where, section, f"is {shown}", "must be an object holding the part's config (with its model_type)"
                )
            _check_section(value, where, f"{section}.")
        vocabulary = _int_or_none(config["decoder"].get("vocab_size"))
        _check_token_ids(config, where, "", vocabulary)
        return
    _check_section(config, where, "")


def _check_section(section: Mapping[str, Any], where: str, prefix: str) -> None:
    """The values of one model's config (a section of an encoder-decoder config, or a whole folder's)."""
    model_type = section.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        _fail(where, f"{prefix}model_type", _is(model_type, "model_type" in section), "must name the model family")
    for name, value in section.items():
        if name in _POSITIVE and (not _is_int(value) or value < 1):
            _fail(where, prefix + name, _is(value), "must be a whole number >= 1")
        if name in _PROBABILITIES and value is not None and not (_is_number(value) and 0.0 <= value < 1.0):
            _fail(where, prefix + name, _is(value), "must be a number in [0, 1)")
        if name in _FLAGS and not isinstance(value, bool):
            _fail(where, prefix + name, _is(value), "must be true or false")
    for width, heads in _HEADS:
        if width in section and heads in section and section[width] % section[heads]:
            _fail(
                where,
                prefix + heads,
                _is(section[heads]),
                f"must divide {prefix}{width} ({section[width]}) evenly (each head gets {width} / heads)",
            )
    if "chunk_size" in section and not (_is_int(section["chunk_size"]) and section["chunk_size"] != 0):
        _fail(where, prefix + "chunk_size", _is(section["chunk_size"]), "must be a whole number >= 1 (or -1: none)")
    _check_token_ids(section, where, prefix, _int_or_none(section.get("vocab_size")))
    _check_family(section, where, prefix, model_type)


def _check_token_ids(config: Mapping[str, Any], where: str, prefix: str, vocabulary: int | None) -> None:
    for name in _TOKEN_IDS:
        value = config.get(name)
        ids = value if isinstance(value, list) else [value]  # eos_token_id may list several ids
        for token in ids:
            if token is None:
                continue
            if not _is_int(token) or token < 0:
                _fail(where, prefix + name, _is(value), "must be a token id (a whole number >= 0) or null")
            if vocabulary is not None and token >= vocabulary:
                _fail(where, prefix + name, _is(value), f"must be below the vocabulary size ({vocabulary})")


def _check_family(section: Mapping[str, Any], where: str, prefix: str, model_type: str) -> None:
    """The model family's own rules: `MegaConfig`'s validation for MEGA; for the others, that transformers
    knows the family (its config class then reads the values checked above)."""
    from transformers import CONFIG_MAPPING

    import mega2bart.registration  # noqa: F401  (MEGA and mega2bart in the Auto mappings)

    if model_type == "mega":
        from ..models.mega import MegaConfig

        try:
            MegaConfig(**{key: value for key, value in section.items() if key != "model_type"})
        except (ValueError, TypeError) as exc:
            message = " ".join(str(exc).split()).removeprefix("MegaConfig.")
            raise BuildError(
                f"{where}: {prefix}{message}; fix the value in the file, or save the model again"
            ) from None
    elif model_type not in CONFIG_MAPPING:
        _fail(
            where,
            f"{prefix}model_type",
            _is(model_type),
            "is not a model family this transformers version knows (e.g. 'mega', 'bart')",
        )


def _fail(where: str, field: str, value: str, rule: str) -> None:
    raise BuildError(f"{where}: `{field}` {value}: it {rule}; fix the value in the file, or save the model again")


def _is(value: Any, present: bool = True) -> str:
    return f"is {_short(value)}" if present else "is missing"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int_or_none(value: Any) -> int | None:
    return value if _is_int(value) and value > 0 else None


def config_location(role: str, directory: str | os.PathLike) -> str:
    """How a message names a model folder's config.json: "model 'out/m': config.json"."""
    return f"{role} {os.fspath(directory)!r}: config.json"


__all__ = ["check_config_values", "config_location"]
