"""Which parameters train: `freeze`, the bridge that always trains, and the staged warm start."""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

logger = logging.getLogger(__name__)

# parameter names of the bridge between encoder and decoder: the random projection and BART's
# cross-attention (self.encoder_attn / self.encoder_attn_layer_norm in each decoder layer)
_BRIDGE_PATTERN = re.compile(r"(^|\.)(enc_to_dec_proj|encoder_attn|encoder_attn_layer_norm)(\.|$)")

_UNUSED_PREFIXES = ("encoder.pooler.",)  # computed by MegaModel, never part of the seq2seq loss


def is_bridge_parameter(name: str) -> bool:
    """True for the encoder->decoder projection and the decoder cross-attention parameters."""
    return _BRIDGE_PATTERN.search(name) is not None


def apply_freeze(model: PreTrainedModel, freeze: str) -> dict[str, int]:
    """Set `requires_grad` for `freeze` ("none" | "encoder" | "decoder"); returns parameter counts.

    The bridge (projection + cross-attention) is never frozen. The encoder's pooler (if the encoder
    has one) is always frozen: the seq2seq loss never reaches it, and under DDP a trainable parameter
    without a gradient stops the run ("Expected to have finished reduction"). Counts: {"trainable", "frozen"}.
    """
    for name, param in model.named_parameters():
        frozen = (
            name.startswith(_UNUSED_PREFIXES)
            or (freeze == "encoder" and name.startswith("encoder."))
            or (freeze == "decoder" and name.startswith("decoder.") and not is_bridge_parameter(name))
        )
        param.requires_grad_(not frozen)
    return _count(model)


def _count(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


class WarmStartCallback(TrainerCallback):
    """Staged training: before step `warm_start_steps` only bridge parameters require gradients.

    Decided from `state.global_step` at every step, so a run resumed inside or after the warm
    start is in the right stage. Parameters frozen by `freeze` stay frozen in both stages.
    """

    def __init__(self, model: torch.nn.Module, warm_start_steps: int) -> None:
        self.model = model
        self.warm_start_steps = warm_start_steps
        # what the second stage trains: every parameter that `apply_freeze` left trainable
        self.full_trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.stage: int | None = None

    def _set_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in self.full_trainable and (stage == 2 or is_bridge_parameter(name)))
        counts = _count(self.model)
        logger.info(
            "Stage %d (%s): %d trainable parameters, %d frozen",
            stage,
            "projection + cross-attention only" if stage == 1 else "full model",
            counts["trainable"],
            counts["frozen"],
        )
        self.stage = stage

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._set_stage(1 if state.global_step < self.warm_start_steps else 2)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._set_stage(2)
