"""MEGA configuration, field-for-field compatible with transformers 4.x `MegaConfig`.

Every field keeps its 4.x name and default so that `config.json` files written by the 4.x port
(e.g. BEE-spoke-data/mega-encoder-small-16k-v1) load unchanged. The additions are `legacy_rmsnorm`
and the EMA init options `ema_init`, `ema_min_reach`, `ema_max_reach` (see below); a 4.x config has
none of them and keeps the 4.x behaviour.
"""

from __future__ import annotations

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

NORMALIZATION_TYPES = ("scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm")
ATTENTION_ACTIVATIONS = ("softmax", "laplace", "relu2")
RELATIVE_POSITIONAL_BIASES = ("simple", "rotary")
EMA_INITS = ("port", "long")
MAX_EMA_REACH = 2**24
"""The longest reach the long EMA init takes, in tokens: 1 - 1/reach is still below 1 in float32 (q = 1 would
never decay), and every reach up to it gives finite weights."""


class MegaConfig(PretrainedConfig):
    r"""Configuration of a MEGA (Moving Average Equipped Gated Attention) model.

    Symbols used in the model file: H = `hidden_size`, Z = `shared_representation_size`,
    E = `intermediate_size`, F = `nffn_hidden_size`, N = `ema_projection_size`, C = `chunk_size`.

    Args:
        vocab_size: rows of the word embedding matrix and width of the MLM head.
        hidden_size: model width H.
        num_hidden_layers: number of MEGA blocks.
        intermediate_size: attention value width E (also the reset-gate width).
        ema_projection_size: EMA components N per channel.
        bidirectional: two EMA kernels (forward and backward) per channel; must be False for a decoder.
        shared_representation_size: width Z of the shared query/key base; softmax scale is Z**-0.5.
        use_chunking: split attention into independent blocks of `chunk_size` tokens.
        chunk_size: block length C. Also the index base of the "simple" relative bias whenever it is
            >= 0, even with `use_chunking=False` (4.x behaviour).
        truncation: if set, the EMA kernel has min(truncation, L) taps.
        normalize_before_mega: pre-norm (True) or post-norm (False) in the gated-attention sublayer.
        normalization_type: one of "scalenorm", "layernorm", "rmsnorm", "batchnorm", "syncbatchnorm".
        norm_affine: learnable scale (and bias) in the norms.
        activation: activation for values, the h projection and the NFFN (any `ACT2FN` key).
        attention_activation: "softmax", "laplace" or "relu2".
        dropout_prob: dropout on the EMA output, the attention output and the NFFN output.
        hidden_dropout_prob: dropout on the attention values.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        use_feature_dropout: channel-wise instead of element-wise dropout.
        use_normalized_ffn: add the normalised feed-forward sublayer.
        nffn_hidden_size: NFFN inner width F.
        normalize_before_ffn: pre-norm (True) or post-norm (False) in the NFFN.
        nffn_activation_dropout_prob: dropout after the NFFN activation.
        max_positions: size of the relative-bias table (2 * max_positions - 1) and of the default
            token-type buffer.
        add_token_type_embeddings: add a token-type embedding table.
        type_vocab_size: rows of the token-type table.
        initializer_range: std of the normal init of linear/embedding weights.
        ema_delta_alpha_range: std of the init of `damping_factor` and `decay_factor`.
        ema_beta_range: std of the noise added to the +-1 init pattern of `ema_expansion_matrix`.
        ema_gamma_omega_range: std of the init of `kernel_projection_matrix` and `residual_weight`.
        ema_init: how a newly initialised EMA sets its time scales (weights loaded from a checkpoint are
            never touched). "port" (or None, the default, as in every 4.x config): the 4.x init, damping
            and decay factors ~N(0, `ema_delta_alpha_range`), so every dimension forgets within about 4
            tokens and nothing crosses a chunk. "long": each channel's N dimensions get reaches
            log-spaced from `ema_min_reach` to `ema_max_reach` tokens (an impulse falls to 1/e after
            about reach = 1 / (1 - q) tokens), each with the same steady-state gain; the expansion and
            projection weights are drawn as in "port". mega2bart's builder and `pretrain` use "long" for
            every MEGA they initialise themselves (docs/mega.md#initialisation).
        ema_min_reach: shortest reach of `ema_init="long"`, in tokens: a number in (1, `MAX_EMA_REACH`] and, with
            `ema_init="long"`, at most the longest reach.
        ema_max_reach: longest reach of `ema_init="long"`, in tokens: None (`max_positions`) or an integer in
            [`ema_min_reach`, `MAX_EMA_REACH`].
        relative_positional_bias: "simple" or "rotary".
        classifier_dropout: dropout of the classification heads (defaults to `hidden_dropout_prob`).
        use_cache: return key/value/EMA states in decoder mode.
        add_lm_hidden_dense_layer: Linear(H, H) + tanh before the LM head.
        is_decoder: causal attention (a decoder); the EMA should then be unidirectional.
        add_cross_attention: MEGA's own gated cross-attention to encoder states (needs is_decoder; 4.x decoder option).
        tie_word_embeddings: tie the MLM head weight to the word embeddings (4.x default).
        use_pooler: default of `MegaModel(config)`'s `add_pooling_layer` (4.x always built the pooler).
            mega2bart sets it False for encoders inside an EncoderDecoderModel, where a pooler is unused
            random weight. (Not named `add_pooling_layer`: with such a config key, 4.x's
            `from_pretrained(..., add_pooling_layer=False)` would set the key instead of passing the argument.)
        legacy_rmsnorm: the 4.x "rmsnorm" discards its normalisation and returns `x * weight`.
            True (default) keeps that behaviour so 4.x rmsnorm checkpoints give the same numbers;
            False applies a real RMSNorm (x / rms(x) * weight). Has no effect on other norm types.
    """

    model_type = "mega"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 128,
        num_hidden_layers: int = 4,
        intermediate_size: int = 256,
        ema_projection_size: int = 16,
        bidirectional: bool = True,
        shared_representation_size: int = 64,
        use_chunking: bool = False,
        chunk_size: int = -1,
        truncation: int | None = None,
        normalize_before_mega: bool = True,
        normalization_type: str = "scalenorm",
        norm_affine: bool = True,
        activation: str = "silu",
        attention_activation: str = "softmax",
        dropout_prob: float = 0.1,
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        use_feature_dropout: bool = False,
        use_normalized_ffn: bool = True,
        nffn_hidden_size: int = 256,
        normalize_before_ffn: bool = True,
        nffn_activation_dropout_prob: float = 0.1,
        max_positions: int = 2048,
        add_token_type_embeddings: bool = False,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        ema_delta_alpha_range: float = 0.2,
        ema_beta_range: float = 0.02,
        ema_gamma_omega_range: float = 1.0,
        ema_init: str | None = None,
        ema_min_reach: float = 4.0,
        ema_max_reach: int | None = None,
        pad_token_id: int = 1,
        bos_token_id: int = 0,
        eos_token_id: int = 2,
        relative_positional_bias: str = "rotary",
        classifier_dropout: float | None = None,
        use_cache: bool = True,
        add_lm_hidden_dense_layer: bool = True,
        legacy_rmsnorm: bool = True,
        is_decoder: bool = False,
        add_cross_attention: bool = False,
        tie_word_embeddings: bool = True,
        use_pooler: bool = True,
        **kwargs,
    ):
        kwargs.pop("num_attention_heads", None)  # written by 4.x, always 1
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.activation = activation
        self.attention_activation = attention_activation
        self.intermediate_size = intermediate_size
        self.ema_projection_size = ema_projection_size
        self.bidirectional = bidirectional
        self.shared_representation_size = shared_representation_size
        self.use_chunking = use_chunking
        self.chunk_size = chunk_size
        self.truncation = truncation
        self.normalize_before_mega = normalize_before_mega
        self.normalization_type = normalization_type
        self.norm_affine = norm_affine
        self.dropout_prob = dropout_prob
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.use_feature_dropout = use_feature_dropout
        self.use_normalized_ffn = use_normalized_ffn
        self.nffn_hidden_size = nffn_hidden_size
        self.normalize_before_ffn = normalize_before_ffn
        self.nffn_activation_dropout_prob = nffn_activation_dropout_prob
        self.max_positions = max_positions
        self.add_token_type_embeddings = add_token_type_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.ema_init = ema_init
        self.ema_min_reach = ema_min_reach
        self.ema_max_reach = ema_max_reach
        self.relative_positional_bias = relative_positional_bias
        self.use_cache = use_cache
        self.classifier_dropout = classifier_dropout
        self.add_lm_hidden_dense_layer = add_lm_hidden_dense_layer
        self.legacy_rmsnorm = legacy_rmsnorm
        self.is_decoder = is_decoder
        self.add_cross_attention = add_cross_attention
        self.tie_word_embeddings = tie_word_embeddings
        self.use_pooler = use_pooler
        self.num_attention_heads = 1  # unused; kept because 4.x wrote it and some tools read it
        self._validate_mega()

    def _validate_mega(self) -> None:
        def fail(field: str, rule: str) -> None:
            raise ValueError(f"MegaConfig.{field} ({getattr(self, field)!r}) {rule}")

        for field in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "ema_projection_size",
            "shared_representation_size",
            "nffn_hidden_size",
            "max_positions",
        ):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(field, "must be a positive integer")
        if self.normalization_type not in NORMALIZATION_TYPES:
            fail("normalization_type", f"must be one of {NORMALIZATION_TYPES}")
        if self.attention_activation not in ATTENTION_ACTIVATIONS:
            fail("attention_activation", f"must be one of {ATTENTION_ACTIVATIONS}")
        if self.relative_positional_bias not in RELATIVE_POSITIONAL_BIASES:
            fail("relative_positional_bias", f"must be one of {RELATIVE_POSITIONAL_BIASES}")
        if self.activation not in ACT2FN:
            fail("activation", "must be a transformers activation name such as 'silu' or 'gelu'")
        if self.relative_positional_bias == "rotary" and self.shared_representation_size % 2:
            fail("shared_representation_size", "must be even with relative_positional_bias='rotary'")
        if self.use_chunking and (not isinstance(self.chunk_size, int) or self.chunk_size <= 0):
            fail("chunk_size", "must be a positive integer when use_chunking=True (e.g. 1024)")
        if self.truncation is not None and (not isinstance(self.truncation, int) or self.truncation <= 0):
            fail("truncation", "must be None or a positive integer")
        if self.ema_init is not None and self.ema_init not in EMA_INITS:
            fail("ema_init", f"must be None or one of {EMA_INITS}")
        self.check_ema_reach()
        bias_base = self.chunk_size if self.chunk_size >= 0 else self.max_positions
        if self.relative_positional_bias == "simple" and bias_base > self.max_positions:
            fail("chunk_size", f"must not exceed max_positions ({self.max_positions}) with the simple relative bias")
        for field in (
            "dropout_prob",
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "nffn_activation_dropout_prob",
        ):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                fail(field, "must be in [0, 1)")

    def check_ema_reach(self) -> None:
        """Refuse reach settings that would give the long EMA init non-finite weights or an empty range of reaches
        (also run when the builder switches a config to `ema_init="long"`)."""
        low, high = self.ema_min_reach, self.ema_max_reach
        if isinstance(low, bool) or not isinstance(low, (int, float)) or not 1 < low <= MAX_EMA_REACH:
            raise ValueError(
                f"MegaConfig.ema_min_reach ({_shown(low)}) must be a finite number of tokens in (1, {MAX_EMA_REACH}] "
                "(e.g. 4)"
            )
        if high is not None and (
            isinstance(high, bool) or not isinstance(high, int) or not low <= high <= MAX_EMA_REACH
        ):
            raise ValueError(
                f"MegaConfig.ema_max_reach ({_shown(high)}) must be None or an integer in [ema_min_reach ({low:g}), "
                f"{MAX_EMA_REACH}]: beyond {MAX_EMA_REACH} tokens float32 cannot tell the reach from infinite"
            )
        if self.ema_init == "long" and high is None and low > self.max_positions:
            raise ValueError(
                f"MegaConfig.ema_min_reach ({low:g}) is above the longest reach of ema_init='long', max_positions "
                f"({self.max_positions}) when ema_max_reach is None: lower it, or set ema_max_reach"
            )


def _shown(value: object) -> str:
    """A setting's value for an error message; an integer too long to read (10**400) by its number of digits."""
    if isinstance(value, int) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)


# transformers' custom-code mechanism: `MegaConfig.save_pretrained` copies this file beside config.json and
# names it in `auto_map["AutoConfig"]`, so the config loads with `trust_remote_code=True` without mega2bart
MegaConfig.register_for_auto_class()

__all__ = ["EMA_INITS", "MAX_EMA_REACH", "MegaConfig"]
