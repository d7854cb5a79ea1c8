"""Named build presets: which encoder, decoder and tokenizer `mega2bart build --preset` uses.

"large" and "base" name real Hub checkpoints (they need the network or a filled HF cache);
"tiny" is a random-init toy built from configs with the offline tokenizer, for demos and tests.
`random_init_sources("large")` / `("base")` give the same architectures as configs (random weights,
offline tokenizer, no network): real shapes for benchmarks and smoke tests, useless for summaries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DEFAULT_ENCODER = "BEE-spoke-data/mega-encoder-small-16k-v1"
DEFAULT_DECODER = "facebook/bart-large"
DEFAULT_TOKENIZER = "facebook/bart-large"
OFFLINE_TOKENIZER = "offline"
"""Tokenizer spec meaning `mega2bart.tokenization.load_offline_tokenizer()` (BART layout, not BART ids)."""

PresetName = Literal["tiny", "base", "large"]

# The BART tokenizer's special ids (<s> 0, <pad> 1, </s> 2), which every model of a mega2bart shares.
_BART_SPECIAL_IDS: dict[str, int] = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)

# The seed encoder's architecture (BEE-spoke-data/mega-encoder-small-16k-v1, 8 layers): the reconstruction
# that scripts/make_fixtures.py (SEED_2L, 2 layers) and tests/fixtures/mega/seed2l_mlm check, at full depth.
# MegaModel without the pooler: 121,959,432 parameters.
SEED_ENCODER: dict[str, Any] = dict(
    vocab_size=50304,  # 50265 padded to a multiple of 64; rows >= 50265 are never indexed
    hidden_size=768,
    num_hidden_layers=8,
    intermediate_size=2304,
    nffn_hidden_size=2304,
    ema_projection_size=32,
    shared_representation_size=192,
    bidirectional=True,
    use_chunking=True,
    chunk_size=1024,
    truncation=None,
    max_positions=16384,
    relative_positional_bias="simple",
    normalization_type="scalenorm",
    norm_affine=True,
    normalize_before_mega=False,
    normalize_before_ffn=False,
    activation="silu",
    attention_activation="softmax",
    add_token_type_embeddings=True,
    type_vocab_size=2,
    add_lm_hidden_dense_layer=False,
    use_normalized_ffn=True,
    use_feature_dropout=False,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
    **_BART_SPECIAL_IDS,
)
# The settings facebook/bart-large and bart-base share (BartConfig values of their config.json); the tiny
# decoder takes them at toy widths and without dropout.
_BART_COMMON: dict[str, Any] = dict(
    vocab_size=50265,
    max_position_embeddings=1024,
    activation_function="gelu",
    dropout=0.1,
    attention_dropout=0.1,
    activation_dropout=0.1,
    init_std=0.02,
    scale_embedding=False,
    **_BART_SPECIAL_IDS,
    decoder_start_token_id=2,
    forced_eos_token_id=2,
)


def _bart_decoder(width: int, *, layers: int, heads: int, ffn: int, **overrides: Any) -> dict[str, Any]:
    """A BartConfig dict: `_BART_COMMON` at this width, depth, head count and feed-forward size.

    Its encoder entries equal its decoder entries, as in bart-base/large. Only the decoder is built, but
    `encoder_layers` still matters: BartConfig.num_hidden_layers follows it.
    """
    return dict(
        _BART_COMMON,
        d_model=width,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=ffn,
        decoder_ffn_dim=ffn,
        **overrides,
    )


# The tiny encoder is the seed checkpoint's configuration (docs/mega.md#seed-configuration: post-norm ScaleNorm,
# simple relative bias, token types, chunked attention, 16k positions, vocab padded past the tokenizer's
# 50265 rows) at toy widths. The tiny decoder is BART-shaped and wider than the encoder, so the
# random `enc_to_dec_proj` is exercised as with bart-large (768 -> 1024).
TINY_ENCODER: dict[str, Any] = dict(
    SEED_ENCODER,
    vocab_size=50272,  # 50265 padded to a multiple of 8, like the seed's 50304
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=64,
    nffn_hidden_size=64,
    shared_representation_size=16,
    ema_projection_size=4,
    chunk_size=64,
)
TINY_DECODER: dict[str, Any] = _bart_decoder(
    64, layers=2, heads=4, ffn=128, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0
)
# facebook/bart-large's architecture (BartConfig values of its config.json). As a decoder-only causal LM
# (BartForCausalLM) with cross-attention: 254,084,096 parameters.
BART_LARGE_DECODER: dict[str, Any] = _bart_decoder(1024, layers=12, heads=16, ffn=4096)
# facebook/bart-base's architecture: 6 layers, width 768 (no enc_to_dec_proj needed).
BART_BASE_DECODER: dict[str, Any] = _bart_decoder(768, layers=6, heads=12, ffn=3072)
_RANDOM_INIT_SOURCES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "large": (SEED_ENCODER, BART_LARGE_DECODER),
    "base": (SEED_ENCODER, BART_BASE_DECODER),
}


@dataclass(frozen=True)
class Preset:
    """Sources for `build_mega2bart`: Hub ids / directories (str) or config dicts (random init)."""

    name: str
    encoder: str | dict[str, Any]
    decoder: str | dict[str, Any]
    tokenizer: str
    description: str


PRESETS: dict[str, Preset] = {
    "large": Preset(
        "large",
        DEFAULT_ENCODER,
        DEFAULT_DECODER,
        DEFAULT_TOKENIZER,
        "seed MEGA encoder (768, 16k context) + facebook/bart-large decoder (1024, 12 layers); needs the Hub",
    ),
    "base": Preset(
        "base",
        DEFAULT_ENCODER,
        "facebook/bart-base",
        "facebook/bart-base",
        "seed MEGA encoder (768, 16k context) + facebook/bart-base decoder (768, 6 layers); needs the Hub",
    ),
    "tiny": Preset(
        "tiny",
        TINY_ENCODER,
        TINY_DECODER,
        OFFLINE_TOKENIZER,
        "random-init toy (MEGA 32 wide, BART 64 wide, 2+2 layers) with the offline tokenizer; no network",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name` ("tiny", "base" or "large")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}") from None


def random_init_sources(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoder config, decoder config) with the real shapes of preset `name` ("base", "large"), for random init.

    Copies, so the caller may change them. "tiny" is random-init already: its configs are returned as they are.
    """
    if name == "tiny":
        return dict(TINY_ENCODER), dict(TINY_DECODER)
    get_preset(name)  # unknown names fail with the list of presets
    encoder, decoder = _RANDOM_INIT_SOURCES[name]
    return dict(encoder), dict(decoder)


# A random tiny MegaForMaskedLM for the offline fill-mask demo (`mega2bart fill-mask --preset tiny`).
TINY_MLM: dict[str, Any] = {**TINY_ENCODER}
