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
    import transformers

    from .models import mega

    transformers.AutoConfig.register("mega", mega.MegaConfig, exist_ok=True)
    for auto_name, model_class in mega.MEGA_AUTO_CLASSES.items():
        getattr(transformers, auto_name).register(mega.MegaConfig, model_class, exist_ok=True)
    _REGISTERED = True
    logger.debug("registered MEGA (model_type 'mega') with the transformers Auto classes")
