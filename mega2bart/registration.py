"""Register the native MEGA classes with transformers' Auto classes (idempotent)."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_REGISTERED = False


def register_mega() -> None:
    """Make `AutoConfig`/`AutoModel*` resolve model_type "mega" to mega2bart's classes.

    Safe to call any number of times; only the first call registers.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForMultipleChoice,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    from .models import mega

    AutoConfig.register("mega", mega.MegaConfig, exist_ok=True)
    pairs = [
        (AutoModel, mega.MegaModel),
        (AutoModelForMaskedLM, mega.MegaForMaskedLM),
        (AutoModelForSequenceClassification, mega.MegaForSequenceClassification),
        (AutoModelForTokenClassification, mega.MegaForTokenClassification),
        (AutoModelForQuestionAnswering, mega.MegaForQuestionAnswering),
        (AutoModelForMultipleChoice, mega.MegaForMultipleChoice),
        (AutoModelForCausalLM, mega.MegaForCausalLM),
    ]
    for auto_class, model_class in pairs:
        auto_class.register(mega.MegaConfig, model_class, exist_ok=True)
    _REGISTERED = True
    logger.debug("registered MEGA (model_type 'mega') with the transformers Auto classes")
