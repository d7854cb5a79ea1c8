"""Native MEGA for transformers 5 (state-dict compatible with the transformers 4.x port)."""

from . import modeling_mega
from .configuration_mega import MegaConfig
from .modeling_mega import *  # noqa: F403  (the model classes: modeling_mega.__all__)

__all__ = ["MegaConfig", *modeling_mega.__all__]
