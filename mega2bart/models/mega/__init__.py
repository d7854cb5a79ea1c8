"""Native MEGA for transformers 5 (state-dict compatible with the transformers 4.x port)."""

from .configuration_mega import MegaConfig
from .modeling_mega import MegaForMaskedLM, MegaModel, MegaPreTrainedModel

__all__ = ["MegaConfig", "MegaForMaskedLM", "MegaModel", "MegaPreTrainedModel"]
