"""Native MEGA for transformers 5 (state-dict compatible with the transformers 4.x port)."""

from .configuration_mega import MegaConfig
from .modeling_mega import (
    MegaCache,
    MegaForCausalLM,
    MegaForMaskedLM,
    MegaForMultipleChoice,
    MegaForQuestionAnswering,
    MegaForSequenceClassification,
    MegaForTokenClassification,
    MegaModel,
    MegaPreTrainedModel,
)

__all__ = [
    "MegaCache",
    "MegaConfig",
    "MegaForCausalLM",
    "MegaForMaskedLM",
    "MegaForMultipleChoice",
    "MegaForQuestionAnswering",
    "MegaForSequenceClassification",
    "MegaForTokenClassification",
    "MegaModel",
    "MegaPreTrainedModel",
]
