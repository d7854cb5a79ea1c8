"""Mega2BartModel: transformers' EncoderDecoderModel with a loss that stays right under gradient accumulation
and beam search that computes the encoder side once per input, not once per beam.

Why a subclass: on transformers 5.x, `EncoderDecoderModel.forward(**kwargs)` accepts the Trainer's
`num_items_in_batch` (so `Trainer.model_accepts_loss_kwargs` is True and the Trainer stops dividing
the loss by the accumulation steps) but computes a per-micro-batch *mean* loss that ignores it.
With 4 accumulation steps the logged and back-propagated loss is ~4x too large, and micro-batches
with few label tokens weigh as much as long ones (transformers #47688). This class sums the
token losses and divides by `num_items_in_batch` (all label tokens of the accumulated batch) when
the Trainer passes it, and by the micro-batch's own label count otherwise, so the accumulated
loss equals the loss of the whole batch in one step.

`resize_token_embeddings` resizes the encoder's and the decoder's vocabulary matrices together (EncoderDecoderModel
raises NotImplementedError), and `generate(max_new_tokens=N)` is passed on as `max_length` where the saved generation
config holds its limits as lengths (`_new_tokens_as_lengths`). Everything else (weights, config, `save_pretrained`)
is EncoderDecoderModel's: a saved
model loads as a plain EncoderDecoderModel with `AutoModelForSeq2SeqLM` (use
`mega2bart.load_mega2bart`, or `trust_remote_code=True`, to get this class back).

Generation shares the encoder across beams (the default; `share_encoder=False` gives the stock path).
Stock `generate` with k beams (or k returned samples) repeats the encoder output k times
(`_expand_inputs_for_generation`), so every cross-attention layer projects and caches keys/values
for k identical copies, and `EncoderDecoderCache.reorder_cache` index-selects that whole
cross-attention cache at every beam step: with bart-large's decoder (12 layers, width 1024) in float32,
16,384 input tokens and 4 beams, that is K and V x 4 beams x 16,384 x 1024 x 4 bytes x 12 layers
≈ 6.4 GB copied per generated token. Here:

- `_expand_inputs_for_generation` repeats the decoder inputs (B*k rows) but not `encoder_outputs`
  or the encoder `attention_mask` (B rows); decoder row i belongs to input i // k, which beam
  search keeps (it only reorders beams within an input).
- `SharedCrossAttentionCache` (an EncoderDecoderCache) reorders and repeats only the self-attention
  cache; the cross-attention keys/values, (B, heads, S, head_dim) per layer, are computed at the
  first step and never copied.
- each decoder layer's cross-attention is a `BeamFoldingCrossAttention` (BART's attention class with
  the same weights and state-dict keys). When the query batch is k x the encoder batch it folds the
  beams into the query length, hidden (B*k, T, D) -> (B, k*T, D), so the query is
  (B, heads, k*T, head_dim) against keys/values (B, heads, S, head_dim), and unfolds the output
  (and any attention weights, (B, heads, k*T, S) -> (B*k, heads, T, S)). Cross-attention has no
  mask between query positions, only the encoder padding mask, which is the same for the k folded
  rows, so every query row sees exactly what it saw unfolded. With equal batches (training, stock
  generation, k = 1) it is BART's attention unchanged; self-attention is never touched.
- on a CPU in float32 the decoder's linear layers compute a decoding step's few rows (B*k) as (W x^T)^T
  (`_weight_major_linear`), which the CPU BLAS runs at the cost of one matrix-vector product instead of
  one per row: without it a 4-beam token cost 2x a 1-beam token at 16,384 tokens, with it 1.4x.

The tokens are those of the stock path (tests/test_generate_shared.py compares them, and the
scores, in float32). Returned `encoder_attentions`/`encoder_hidden_states` have B rows, not B*k.
Sharing needs eager or sdpa attention and a dynamic cache (the defaults); with another attention
implementation, `cache_implementation="static"`, a user-passed `cache`, an assistant model or a custom
generate, `generate` falls back to the stock path.
`transformers.EncoderDecoderModel.generate(model, ...)` on this class is also the stock path.

This file imports only torch and transformers, so `mega2bart.builder.remote_code` ships it unchanged as
remote code (`modeling_mega2bart.py` in a saved model directory, beside the MEGA files). The block
after the imports registers "mega" with the Auto classes from those sibling MEGA files when nothing
has registered it yet: in a saved directory loaded without mega2bart. Inside the package
`import mega2bart` registers "mega" first, so the block is skipped and its sibling imports never run.
"""

import contextlib
from typing import Any

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModel,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    GenerationConfig,
    PreTrainedModel,
)
from transformers.cache_utils import Cache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.bart.modeling_bart import BartAttention
from transformers.utils.generic import can_return_tuple

if "mega" not in CONFIG_MAPPING:
    # Only as remote code without mega2bart: the MEGA files shipped beside this one build the "mega"
    # encoder sub-config and model (these sibling files exist only in a saved model directory).
    from .configuration_mega import MegaConfig
    from .modeling_mega import MegaModel

    AutoConfig.register("mega", MegaConfig, exist_ok=True)
    AutoModel.register(MegaConfig, MegaModel, exist_ok=True)


def seq2seq_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Token-level cross-entropy: sum over label tokens != -100, divided by `num_items_in_batch`.

    Labels are not shifted: in an encoder-decoder, logits[:, t] predicts labels[:, t] (the decoder
    input is the labels shifted right). `num_items_in_batch` is the label-token count of the whole
    accumulated batch (the Trainer passes it); without it the micro-batch's own count is used,
    which is the ordinary mean. Computed in float32.
    """
    vocab = logits.shape[-1]
    labels = labels.to(logits.device)
    total = F.cross_entropy(
        logits.float().reshape(-1, vocab),  # (B*T, V)
        labels.reshape(-1),  # (B*T,)
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    if num_items_in_batch is None:
        denominator = (labels != -100).sum().clamp(min=1)
    elif torch.is_tensor(num_items_in_batch):
        denominator = num_items_in_batch.to(total.device)
    else:
        denominator = num_items_in_batch
    return total / denominator


class BeamFoldingCrossAttention(BartAttention):
    """BART cross-attention that lets k decoder rows per input attend to one copy of the encoder states.

    Same weights, state-dict keys and maths as `BartAttention`. When `hidden_states` has k x as many
    rows as `key_value_states` (the encoder states, also passed when the keys/values come from the
    cache), decoder row i belonging to encoder row i // k, the k rows of an input are folded into the
    query length and attended together. Any other call is BartAttention's own forward.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, length, dim = hidden_states.shape  # (B*k, T, D)
        batch = rows if key_value_states is None else key_value_states.shape[0]  # B
        if batch == rows:
            return super().forward(
                hidden_states, key_value_states, cache=cache, attention_mask=attention_mask, **kwargs
            )
        if rows % batch:
            raise ValueError(f"decoder batch ({rows}) must be a multiple of the encoder batch ({batch})")
        k = rows // batch
        folded = hidden_states.reshape(batch, k * length, dim)  # (B, k*T, D): row b*k + j -> b, query j*T + t
        if attention_mask is not None:
            if not torch.is_tensor(attention_mask) or attention_mask.ndim != 4:
                raise TypeError(
                    "shared-encoder generation needs a 4D tensor cross-attention mask, got "
                    f"{type(attention_mask).__name__} (attn_implementation={self.config._attn_implementation!r}): "
                    "pass share_encoder=False to generate"
                )
            if attention_mask.shape[2] != 1:
                # padding masks are the same for every query row: (B, 1, T, S) -> (B, 1, k*T, S)
                attention_mask = attention_mask.repeat(1, 1, k, 1)
        output, weights = super().forward(
            folded, key_value_states, cache=cache, attention_mask=attention_mask, **kwargs
        )  # (B, k*T, D), (B, heads, k*T, S) or None
        output = output.reshape(rows, length, dim)  # (B*k, T, D)
        if weights is not None:
            heads, source = weights.shape[1], weights.shape[-1]
            weights = (
                weights.reshape(batch, heads, k, length, source)  # (B, heads, k, T, S)
                .transpose(1, 2)  # (B, k, heads, T, S)
                .reshape(rows, heads, length, source)  # (B*k, heads, T, S)
            )
        return output, weights


def use_beam_folding_cross_attention(decoder: torch.nn.Module) -> int:
    """Make every BART cross-attention (`encoder_attn`) of `decoder` a `BeamFoldingCrossAttention`; returns how many.

    Only the Python class changes (the module keeps its parameters, buffers and state-dict keys).
    """
    count = 0
    for module in decoder.modules():
        attention = getattr(module, "encoder_attn", None)
        if type(attention) is BartAttention:
            attention.__class__ = BeamFoldingCrossAttention
        if isinstance(attention, BeamFoldingCrossAttention):
            count += 1
    return count


class SharedCrossAttentionCache(EncoderDecoderCache):
    """EncoderDecoderCache whose cross-attention part holds one copy per input (B rows) while the
    self-attention part holds one per beam (B*k rows): beam reordering and repeating touch only the
    self-attention part, so the cross-attention keys/values are never copied."""

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        # beam search picks beams within each input, so decoder row i stays with encoder row i // k
        self.self_attention_cache.reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        # row i -> rows i*r .. i*r+r-1: all still belong to the same input, as the folding expects
        self.check_dynamic_cache(self.batch_repeat_interleave.__name__)
        self.self_attention_cache.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError(
            "SharedCrossAttentionCache cannot select arbitrary decoder rows (the cross-attention part is per input): "
            "pass share_encoder=False to generate"
        )


def _project_once(projection: torch.nn.Linear) -> Any:
    """`projection.forward` for one sharing `generate` call: the encoder output -> decoder width, once.

    EncoderDecoderModel.forward applies `enc_to_dec_proj` to the whole encoder output at every decoding
    step, although only the first step uses the result (later steps read the cross-attention keys and
    values from the cache). At 16,384 tokens that is 2 x 16,384 x 768 x 1,024 = 25.8 GFLOP per token for
    the bart-large decoder. Generation passes the same `encoder_outputs` tensor at every step, so the
    result is kept for that tensor object (the values are the ones the stock path computes each step).
    """
    memo: dict[str, torch.Tensor] = {}

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:  # (B, S, H_enc) -> (B, S, H_dec)
        if memo.get("input") is not hidden_states:
            memo["input"], memo["output"] = hidden_states, torch.nn.Linear.forward(projection, hidden_states)
        return memo["output"]

    return forward


# At most this many rows (batch x beams x new positions) take the weight-major product in a decoding step.
SMALL_BATCH_ROWS = 64


def _weight_major_linear(linear: torch.nn.Linear) -> Any:
    """`linear.forward` for decoding on a CPU in float32: y = (W x^T)^T for inputs of at most SMALL_BATCH_ROWS rows.

    `F.linear(x, W)` is x @ W^T. For a few rows (a decoding step: batch x beams rows) the CPU BLAS packs the
    transposed weight for every call, and the product costs about as much per row as a matrix-vector product:
    on a 2-core AMD EPYC (benchmarks/README.md, "the 4-beam token"), 4 rows through bart-large's lm_head
    (1024 -> 50,265) took 48.8 ms against 12.9 ms for 1 row. W @ x^T streams W in its stored row-major order:
    12.9 ms for 4 rows. Same products, summed in the BLAS's order (float32 rounding apart, the same values).
    Larger inputs, other dtypes (bfloat16 gains nothing there) and other devices take `F.linear` unchanged.
    """

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        rows = hidden_states.numel() // linear.in_features
        weight = linear.weight  # (out, in)
        if rows > SMALL_BATCH_ROWS or weight.dtype != torch.float32 or weight.device.type != "cpu" or rows == 0:
            return F.linear(hidden_states, weight, linear.bias)
        flat = hidden_states.reshape(rows, linear.in_features).t()  # (in, rows)
        if linear.bias is None:
            product = torch.mm(weight, flat)  # (out, rows)
        else:
            product = torch.addmm(linear.bias.unsqueeze(1), weight, flat)  # (out, rows)
        return product.t().contiguous().reshape(*hidden_states.shape[:-1], linear.out_features)

    return forward


class _WeightMajorDecoding:
    """Context: every `nn.Linear` of `module` uses `_weight_major_linear` (restored on exit)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.linears = [m for m in module.modules() if type(m) is torch.nn.Linear and "forward" not in m.__dict__]

    def __enter__(self) -> None:
        for linear in self.linears:
            linear.forward = _weight_major_linear(linear)

    def __exit__(self, *exc_info: Any) -> None:
        for linear in self.linears:
            del linear.forward  # back to nn.Linear.forward


class Mega2BartConfig(EncoderDecoderConfig):
    """An EncoderDecoderConfig (model_type "encoder-decoder"); a named class so remote code can point at it."""


class Mega2BartModel(EncoderDecoderModel):
    """EncoderDecoderModel whose `forward` normalises the loss by `num_items_in_batch` and whose `generate`
    shares the encoder states and cross-attention cache across beams (see module docstring).

    `share_encoder` (attribute, default True) switches the sharing for every `generate` call;
    `generate(..., share_encoder=False)` switches it off for one call. Off is transformers' stock path.
    """

    config_class = Mega2BartConfig
    # Tell the Trainer explicitly: forward consumes `num_items_in_batch`, so the loss is already
    # normalised over the accumulated batch and must not be divided by the accumulation steps.
    accepts_loss_kwargs = True
    share_encoder: bool = True
    # True only inside a `generate` call that shares (read by the two generation hooks below)
    _sharing_encoder: bool = False

    def __init__(
        self,
        config: EncoderDecoderConfig | None = None,
        encoder: PreTrainedModel | None = None,
        decoder: PreTrainedModel | None = None,
    ) -> None:
        if config is None and encoder is not None and decoder is not None:
            config = Mega2BartConfig.from_encoder_decoder_configs(encoder.config, decoder.config)
        elif isinstance(config, EncoderDecoderConfig) and not isinstance(config, Mega2BartConfig):
            config = Mega2BartConfig.from_dict(config.to_dict())  # AutoConfig gives the plain class
        super().__init__(config=config, encoder=encoder, decoder=decoder)
        self._folding_layers = use_beam_folding_cross_attention(self.decoder)

    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        share_encoder: bool | None = None,
        **kwargs: Any,
    ) -> Any:
        """`GenerationMixin.generate`, computing the encoder side once per input when the expand size
        (`num_beams` or `num_return_sequences`) is > 1. `share_encoder=False` (or `model.share_encoder =
        False`) runs transformers' stock path, which repeats the encoder output per beam; the tokens are
        the same."""
        if generation_config is None:
            kwargs = self._new_tokens_as_lengths(kwargs)
        share = self.share_encoder if share_encoder is None else share_encoder
        share = share and self._can_share_encoder(generation_config, kwargs)
        previous, self._sharing_encoder = self._sharing_encoder, share
        projection = getattr(self, "enc_to_dec_proj", None) if share else None
        if projection is not None:
            projection.forward = _project_once(projection)
        try:
            with _WeightMajorDecoding(self.decoder) if share else contextlib.nullcontext():
                return super().generate(inputs, generation_config=generation_config, **kwargs)
        finally:
            self._sharing_encoder = previous
            if projection is not None:
                del projection.forward  # back to nn.Linear.forward

    def _new_tokens_as_lengths(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A caller's `max_new_tokens`/`min_new_tokens` as `max_length`/`min_length` where the saved generation
        config holds that limit as a length (mega2bart's and BART's summarisation defaults): the same limit,
        without transformers' "Both `max_new_tokens` and `max_length` seem to have been set" warning."""
        decoder_input_ids = kwargs.get("decoder_input_ids")
        prefix = 1 if decoder_input_ids is None else decoder_input_ids.shape[-1]  # the decoder start token
        kwargs = dict(kwargs)
        for new_tokens, length in (("max_new_tokens", "max_length"), ("min_new_tokens", "min_length")):
            saved = getattr(self.generation_config, length, None)
            if kwargs.get(new_tokens) is not None and kwargs.get(length) is None and saved is not None:
                kwargs[length] = kwargs.pop(new_tokens) + prefix
        return kwargs

    def _can_share_encoder(self, generation_config: GenerationConfig | None, kwargs: dict[str, Any]) -> bool:
        """Sharing needs the folding cross-attention with a 4D-mask attention (eager, sdpa), a dynamic cache
        made by generate, and no assistant or custom decoding loop; otherwise generate runs the stock path."""
        config = generation_config if generation_config is not None else self.generation_config
        cache_implementation = kwargs.get("cache_implementation", config.cache_implementation)
        own_loop = ("cache", "past_key_values", "assistant_model", "custom_generate")
        return (
            self._folding_layers > 0
            and self.decoder.config._attn_implementation in ("eager", "sdpa")
            and cache_implementation in (None, "dynamic")
            and all(kwargs.get(name) is None for name in own_loop)
        )

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **model_kwargs: Any,
    ) -> tuple[torch.LongTensor, dict[str, Any]]:
        """Stock expansion, except that a sharing `generate` keeps `encoder_outputs` and the encoder
        `attention_mask` at B rows (the decoder inputs become B*expand_size rows as usual)."""
        if not (self._sharing_encoder and is_encoder_decoder and expand_size > 1):
            return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **model_kwargs)
        shared = {
            name: model_kwargs.pop(name) for name in ("encoder_outputs", "attention_mask") if name in model_kwargs
        }
        if shared.get("encoder_outputs") is None:
            raise ValueError("If `is_encoder_decoder` is True, make sure that `encoder_outputs` is defined.")
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, False, input_ids, **model_kwargs)
        return input_ids, {**model_kwargs, **shared}

    def _prepare_cache_for_generation(
        self, generation_config: GenerationConfig, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The stock cache, with its EncoderDecoderCache made a `SharedCrossAttentionCache` when sharing."""
        # A decoder with its own cache (MEGA: EMA state, the open attention block, the projected encoder
        # states in a MegaCache) builds it on its first call: generate() must not hand it an EncoderDecoderCache.
        if not type(self.decoder)._supports_default_dynamic_cache() and model_kwargs.get("cache") is None:
            return None
        result = super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("cache")
        if self._sharing_encoder and type(cache) is EncoderDecoderCache:
            model_kwargs["cache"] = SharedCrossAttentionCache(cache.self_attention_cache, cache.cross_attention_cache)
        return result

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> torch.nn.Embedding:
        """Resize every vocabulary-sized matrix together, as BART does: the decoder's embeddings and output
        layer (tied or not, as before), the encoder's embeddings, any `final_logits_bias` of the decoder, and the
        vocab sizes of the three configs. Arguments as `PreTrainedModel.resize_token_embeddings` (the decoder's
        rows, padded to `pad_to_multiple_of`, are the encoder's too); returns the decoder's input embeddings.

        New rows start as transformers starts them (`mean_resizing`: the old rows' mean and covariance). The
        change is appended to the build record in the config (`mega2bart_build`), when there is one."""
        old_rows = self.decoder.get_input_embeddings().num_embeddings
        shared = self.encoder.get_input_embeddings().weight is self.decoder.get_input_embeddings().weight
        embeddings = self.decoder.resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)
        rows = embeddings.num_embeddings
        if shared:
            self.encoder.set_input_embeddings(embeddings)
        elif self.encoder.get_input_embeddings().num_embeddings != rows:
            self.encoder.resize_token_embeddings(rows, mean_resizing=mean_resizing)
        for module in self.decoder.modules():
            bias = getattr(module, "final_logits_bias", None)  # (1, vocab) in BART's seq2seq head
            if torch.is_tensor(bias) and bias.shape[-1] != rows:
                resized = bias.new_zeros((*bias.shape[:-1], rows))  # new tokens get no bias
                keep = min(rows, bias.shape[-1])
                resized[..., :keep] = bias[..., :keep]
                persistent = "final_logits_bias" not in module._non_persistent_buffers_set
                module.register_buffer("final_logits_bias", resized, persistent=persistent)
        self.config.vocab_size = self.config.encoder.vocab_size = self.config.decoder.vocab_size = rows
        record = getattr(self.config, "mega2bart_build", None)
        if rows != old_rows and isinstance(record, dict):
            event = {"event": "resize_token_embeddings", "vocab_size": {"from": old_rows, "to": rows}}
            record.setdefault("training", []).append(event)
        return embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        encoder_outputs: tuple[torch.Tensor, ...] | BaseModelOutput | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        # encoder_outputs / inputs_embeds are named (not left in **kwargs) because generate accepts only
        # the model kwargs that forward's signature names: `generate(encoder_outputs=...)` needs them here
        if labels is not None and decoder_input_ids is None and kwargs.get("decoder_inputs_embeds") is None:
            # exactly what EncoderDecoderModel does with labels, done here so the parent computes no loss
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            if decoder_attention_mask is None:
                decoder_attention_mask = (decoder_input_ids != self.config.pad_token_id).to(decoder_input_ids.dtype)
        kwargs.pop("return_dict", None)
        if labels is not None:
            # as BartForConditionalGeneration: a loss needs no cache, and a cache filled in forward breaks
            # activation checkpointing that recomputes a whole decoder layer (FSDP's checkpoint_wrapper:
            # "A different number of tensors was saved during the original forward and recomputation")
            kwargs["use_cache"] = False
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        if labels is None:
            return outputs
        loss = seq2seq_lm_loss(outputs.logits, labels, num_items_in_batch)
        return Seq2SeqLMOutput(loss=loss, **{key: value for key, value in outputs.items() if key != "loss"})


__all__ = [
    "BeamFoldingCrossAttention",
    "Mega2BartConfig",
    "Mega2BartModel",
    "SharedCrossAttentionCache",
    "seq2seq_lm_loss",
    "use_beam_folding_cross_attention",
]
