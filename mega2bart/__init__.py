"""mega2bart: long-document text2text with a 16k-token MEGA encoder and a BART decoder.

Importing this package registers the native MEGA model with transformers' Auto classes, so
`AutoModel.from_pretrained(...)` and `pipeline("fill-mask", ...)` work on MEGA checkpoints.
"""

from __future__ import annotations

from .models.mega import MegaConfig, MegaForMaskedLM, MegaModel, MegaPreTrainedModel
from .registration import register_mega

__version__ = "0.1.0"

register_mega()

__all__ = ["MegaConfig", "MegaForMaskedLM", "MegaModel", "MegaPreTrainedModel", "__version__", "register_mega"]
