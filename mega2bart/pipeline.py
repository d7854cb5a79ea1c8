"""`pipeline("summarization")` for transformers 5, which removed the task (and its pipeline class).

`register_summarization_pipeline()` (called when mega2bart is imported) registers a small
`SummarizationPipeline` for any `AutoModelForSeq2SeqLM` model, so the familiar

    import mega2bart
    summarizer = pipeline("summarization", model="out/mega2bart-tiny")
    summarizer(long_text, max_new_tokens=128)  # -> [{"summary_text": "..."}]

works again. The model's own `generation_config.json` (beams, lengths, n-gram blocking) applies;
keyword arguments override it per call. Inputs are truncated to the tokenizer's
`model_max_length` (16,384 for a mega2bart model) unless `truncation=False`.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoModelForSeq2SeqLM, Pipeline

logger = logging.getLogger(__name__)

TASK = "summarization"


class SummarizationPipeline(Pipeline):
    """Text -> `[{"summary_text": ...}]` with `model.generate` (one dict per input text)."""

    _pipeline_calls_generate = True
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def _sanitize_parameters(
        self,
        truncation: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        **generate_kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        preprocess = {} if truncation is None else {"truncation": truncation}
        postprocess = {} if clean_up_tokenization_spaces is None else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        return preprocess, generate_kwargs, postprocess

    def preprocess(self, text: str, truncation: bool = True) -> dict[str, Any]:
        if not isinstance(text, str):
            raise TypeError(f"summarization input must be a string (or a list of strings), got {type(text).__name__}")
        return self.tokenizer(text, return_tensors="pt", truncation=truncation)

    def _forward(self, model_inputs: dict[str, Any], **generate_kwargs: Any) -> dict[str, Any]:
        generate_kwargs = self._prepare_generate_kwargs(generate_kwargs)
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)  # (1, T_out)
        return {"output_ids": output_ids}

    def postprocess(
        self, model_outputs: dict[str, Any], clean_up_tokenization_spaces: bool | None = None
    ) -> list[dict[str, str]]:
        options = {} if clean_up_tokenization_spaces is None else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        return [
            {"summary_text": self.tokenizer.decode(ids, skip_special_tokens=True, **options)}
            for ids in model_outputs["output_ids"]
        ]


def register_summarization_pipeline() -> None:
    """Make `pipeline("summarization")` build a `SummarizationPipeline` (idempotent).

    transformers 5 lists "summarization" in `transformers.pipelines.REMOVED_TASKS`, which
    `pipeline()` checks before its registry; the entry is removed so the registered task is used.
    """
    from transformers import pipelines

    pipelines.REMOVED_TASKS.pop(TASK, None)
    if pipelines.PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is SummarizationPipeline:
        return
    pipelines.PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=SummarizationPipeline, pt_model=AutoModelForSeq2SeqLM, type="text"
    )
    logger.debug("registered pipeline(%r) -> mega2bart.pipeline.SummarizationPipeline", TASK)


__all__ = ["SummarizationPipeline", "register_summarization_pipeline"]
