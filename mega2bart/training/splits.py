"""The data of a run: the train and eval splits, loaded, cut and tokenized (in memory or streamed)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import TrainConfig

logger = logging.getLogger(__name__)

STREAM_SHUFFLE_BUFFER = 1000


def load_splits(config: TrainConfig, tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The tokenized "train" (and "eval", with an `eval_split`) sets of `config`, their tokenization
    statistics and the data loading statistics (for `metrics.json`)."""
    if config.streaming:
        return _streamed_splits(config, tokenizer)
    from datasets import DatasetDict

    from mega2bart.data import load_summarization_dataset, require_rows, tokenize_dataset

    raw, load_stats = load_summarization_dataset(
        config.dataset,
        config.dataset_config,
        text_column=config.text_column,
        summary_column=config.summary_column,
    )
    needed = [config.train_split] + ([config.eval_split] if config.eval_split else [])
    for split in needed:
        if split not in raw:
            raise ValueError(f"dataset {config.dataset!r} has no split {split!r}; its splits are {sorted(raw)}")
        require_rows(raw, split, load_stats, config.dataset)
    train_raw = raw[config.train_split]
    if config.max_train_samples:
        train_raw = train_raw.select(range(min(config.max_train_samples, len(train_raw))))
    splits = {"train": train_raw}
    if config.eval_split:
        eval_raw = raw[config.eval_split]
        if config.max_eval_samples:
            eval_raw = eval_raw.select(range(min(config.max_eval_samples, len(eval_raw))))
        splits["eval"] = eval_raw
    tokenized, token_stats = tokenize_dataset(
        DatasetDict(splits), tokenizer, config.max_source_length, config.max_target_length
    )
    return tokenized, token_stats, load_stats.to_dict()


def _streamed_splits(config: TrainConfig, tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`config.streaming`: the train split as a shuffled, lazily tokenized stream; the eval split's
    first `max_eval_samples` rows read from a stream into memory (generation needs a sized set)."""
    from datasets import Dataset

    from mega2bart.data import load_summarization_stream, tokenize_dataset

    def stream(split: str) -> Any:
        return load_summarization_stream(
            config.dataset,
            config.dataset_config,
            split=split,
            text_column=config.text_column,
            summary_column=config.summary_column,
        )

    train = stream(config.train_split)
    if config.max_train_samples:
        train = train.take(config.max_train_samples)
    # the Trainer calls set_epoch, so each pass over the stream is shuffled anew
    train = train.shuffle(seed=config.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    tokenized = {"train": tokenize_dataset(train, tokenizer, config.max_source_length, config.max_target_length)[0]}
    token_stats = {}
    if config.eval_split:
        rows = list(stream(config.eval_split).take(config.max_eval_samples))
        if not rows:
            raise ValueError(f"the eval split {config.eval_split!r} of {config.dataset!r} has no usable row")
        eval_set = Dataset.from_list(rows, split=config.eval_split)
        tokenized["eval"], stats = tokenize_dataset(
            eval_set, tokenizer, config.max_source_length, config.max_target_length
        )
        token_stats = {"eval": next(iter(stats.values()))}
    if config.train_sampling_strategy == "group_by_length":
        logger.info("streaming: the training rows come in stream order (shuffled in a buffer), not grouped by length")
    return tokenized, token_stats, {"source": config.dataset, "streaming": True, "train_split": config.train_split}
