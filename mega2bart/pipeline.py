"""`pipeline("summarization")` for transformers 5, which removed the task (and its pipeline class).

`register_summarization_pipeline()` (called when mega2bart is imported) registers a small
`SummarizationPipeline` for any `AutoModelForSeq2SeqLM` model, so the familiar

    import mega2bart
    summarizer = pipeline("summarization", model="out/mega2bart-tiny")
    summarizer(long_text, max_length=129)  # -> [{"summary_text": "..."}]  (max_new_tokens=128 on Mega2BartModel)

works again. A mega2bart directory (an encoder-decoder with a MEGA encoder) loads as `Mega2BartModel`, whose
beam search computes the encoder side once per input (see `mega2bart.modeling_mega2bart`); any other
seq2seq model loads as `AutoModelForSeq2SeqLM` would load it. The model's own `generation_config.json` (beams, lengths, n-gram blocking) applies;
keyword arguments override it per call. Inputs are truncated to the tokenizer's
`model_max_length` (16,384 for a mega2bart model) unless `truncation=False`.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import AutoConfig, AutoModelForSeq2SeqLM, Pipeline, PretrainedConfig

logger = logging.getLogger(__name__)

TASK = "summarization"


def is_mega2bart_config(config: PretrainedConfig) -> bool:
    """True for an encoder-decoder config whose encoder is MEGA (what `mega2bart build` saves)."""
    encoder = getattr(config, "encoder", None)
    return config.model_type == "encoder-decoder" and getattr(encoder, "model_type", None) == "mega"


class Seq2SeqLMLoader(AutoModelForSeq2SeqLM):
    """`AutoModelForSeq2SeqLM` for the pipeline, except that a mega2bart directory loads as `Mega2BartModel`.

    Plain `AutoModelForSeq2SeqLM` gives a mega2bart directory the stock `EncoderDecoderModel` (its
    model_type is "encoder-decoder"), whose beam search repeats the encoder output per beam.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *model_args: Any, **kwargs: Any) -> Any:
        config = kwargs.get("config")
        if not isinstance(config, PretrainedConfig):
            hub = ("revision", "token", "local_files_only", "trust_remote_code", "cache_dir", "subfolder")
            config = AutoConfig.from_pretrained(
                pretrained_model_name_or_path, **{key: kwargs[key] for key in hub if key in kwargs}
            )
        if not is_mega2bart_config(config):
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        from .modeling_mega2bart import Mega2BartModel

        for key in ("trust_remote_code", "code_revision"):  # only the Auto classes read these
            kwargs.pop(key, None)
        return Mega2BartModel.from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)


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
        postprocess = (
            {}
            if clean_up_tokenization_spaces is None
            else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        )
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
        options = (
            {}
            if clean_up_tokenization_spaces is None
            else {"clean_up_tokenization_spaces": clean_up_tokenization_spaces}
        )
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
        TASK, pipeline_class=SummarizationPipeline, pt_model=Seq2SeqLMLoader, type="text"
    )
    logger.debug("registered pipeline(%r) -> mega2bart.pipeline.SummarizationPipeline", TASK)


__all__ = ["Seq2SeqLMLoader", "SummarizationPipeline", "is_mega2bart_config", "register_summarization_pipeline"]
