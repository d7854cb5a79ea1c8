"""mega2bart: long-document text2text with a 16k-token MEGA encoder and a BART decoder.

Importing this package registers the native MEGA model with transformers' Auto classes, so
`AutoModel.from_pretrained(...)` and `pipeline("fill-mask", ...)` work on MEGA checkpoints, and
registers a `pipeline("summarization")` (a task transformers 5 removed).
The builder, trainers and summariser are imported lazily (they pull in the Trainer stack).
"""

from __future__ import annotations

import importlib
from typing import Any

from .models import mega
from .models.mega import *  # noqa: F403  (the MEGA classes: mega.__all__)
from .pipeline import register_summarization_pipeline
from .registration import register_mega

__version__ = "0.1.0"

register_mega()
register_summarization_pipeline()  # transformers 5 removed the "summarization" task

# public name -> submodule that defines it (imported on first access)
_LAZY = {
    "build_mega2bart": "builder",
    "save_mega2bart": "builder",
    "load_mega2bart": "builder",
    "describe_mega2bart": "builder",
    "BuildError": "builder",
    "BuildInfo": "builder",
    "ModelDescription": "builder",
    "preset_kwargs": "builder",
    "Mega2BartConfig": "modeling_mega2bart",
    "Mega2BartModel": "modeling_mega2bart",
    "load_offline_tokenizer": "tokenization",
    "is_real_bart_tokenizer": "tokenization",
    "load_summarization_dataset": "data",
    "tokenize_dataset": "data",
    "SummarizationCollator": "data",
    "TrainConfig": "training",
    "train": "training",
    "rouge_scores": "metrics",
    "split_sentences": "metrics",
    "Summarizer": "summarize",
    "GenerationOptions": "summarize",
    "summarize_files": "summarize",
    "evaluate_model": "evaluation",
    "PretrainConfig": "pretraining",
    "run_pretraining": "pretraining",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mega2bart' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [*mega.__all__, "__version__", "register_mega", "register_summarization_pipeline", *_LAZY]
