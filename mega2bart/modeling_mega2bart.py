"""Mega2BartModel: transformers' EncoderDecoderModel with a loss that stays right under gradient accumulation.

Why a subclass: on transformers 5.x, `EncoderDecoderModel.forward(**kwargs)` accepts the Trainer's
`num_items_in_batch` (so `Trainer.model_accepts_loss_kwargs` is True and the Trainer stops dividing
the loss by the accumulation steps) but computes a per-micro-batch *mean* loss that ignores it.
With 4 accumulation steps the logged and back-propagated loss is ~4x too large, and micro-batches
with few label tokens weigh as much as long ones (transformers #47688). This class sums the
token losses and divides by `num_items_in_batch` (all label tokens of the accumulated batch) when
the Trainer passes it, and by the micro-batch's own label count otherwise, so the accumulated
loss equals the loss of the whole batch in one step.

Everything else (weights, config, generation, `save_pretrained`) is EncoderDecoderModel's: a saved
model loads as a plain EncoderDecoderModel with `AutoModelForSeq2SeqLM` (use
`mega2bart.load_mega2bart` to get this class back for training).

This file imports only torch and transformers, so `mega2bart.builder` also ships it as remote code
(`modeling_mega2bart.py` in a saved model directory, beside the MEGA files). There the marker line
below is replaced by imports of the sibling MEGA files that register "mega" with the Auto classes.
"""

import torch
import torch.nn.functional as F
from transformers import EncoderDecoderConfig, EncoderDecoderModel, PreTrainedModel
from transformers.modeling_outputs import Seq2SeqLMOutput
from transformers.utils.generic import can_return_tuple

# @mega2bart:remote-code-registration@


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


class Mega2BartConfig(EncoderDecoderConfig):
    """An EncoderDecoderConfig (model_type "encoder-decoder"); a named class so remote code can point at it."""


class Mega2BartModel(EncoderDecoderModel):
    """EncoderDecoderModel whose `forward` normalises the loss by `num_items_in_batch` (see module docstring)."""

    config_class = Mega2BartConfig
    # Tell the Trainer explicitly: forward consumes `num_items_in_batch`, so the loss is already
    # normalised over the accumulated batch and must not be divided by the accumulation steps.
    accepts_loss_kwargs = True

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

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs) -> None:
        # A decoder with its own cache (MEGA: EMA state, the open attention block, the projected encoder
        # states in a MegaCache) builds it on its first call: generate() must not hand it an EncoderDecoderCache.
        if not type(self.decoder)._supports_default_dynamic_cache() and model_kwargs.get("cache") is None:
            return
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.LongTensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        **kwargs,
    ) -> Seq2SeqLMOutput:
        if labels is not None and decoder_input_ids is None and kwargs.get("decoder_inputs_embeds") is None:
            # exactly what EncoderDecoderModel does with labels, done here so the parent computes no loss
            decoder_input_ids = self.prepare_decoder_input_ids_from_labels(labels)
            if decoder_attention_mask is None:
                decoder_attention_mask = (decoder_input_ids != self.config.pad_token_id).to(decoder_input_ids.dtype)
        kwargs.pop("return_dict", None)
        outputs = super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            return_dict=True,
            **kwargs,
        )
        if labels is None:
            return outputs
        loss = seq2seq_lm_loss(outputs.logits, labels, num_items_in_batch)
        return Seq2SeqLMOutput(loss=loss, **{key: value for key, value in outputs.items() if key != "loss"})


__all__ = ["Mega2BartConfig", "Mega2BartModel", "seq2seq_lm_loss"]
