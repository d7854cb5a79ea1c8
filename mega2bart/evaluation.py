"""Evaluation: generate summaries for a dataset split, score them with ROUGE, write the results.

`evaluate_model(model_dir, dataset, output_dir)` loads the split (`mega2bart.data`), summarises it
with a `Summarizer` (examples longest first, in the same groups for one process or many; under
`torchrun`/`accelerate launch` the groups are shared between the processes as in
`mega2bart.summarize.summarize_in_parts`), scores it once per example (`mega2bart.metrics`), and
writes `eval_results.json` (ROUGE-1/2/L/Lsum with bootstrap intervals, the sentence splitter, length
statistics, settings, throughput) and `predictions.jsonl` (one record per example). It replaces
only files it wrote itself (`_check_eval_output_dir`).

Summarising, the part files of several processes and loading for inference live in
`mega2bart.summarize`; this module reuses them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

from mega2bart.summarize import GenerationOptions, Summarizer, SummaryResult
from mega2bart.summarize.groups import length_groups, longest_first, summarized
from mega2bart.summarize.loading import inference_device, model_precision, resolve_dtype, throughput
from mega2bart.summarize.parallel import owned_groups, part_file, process_barrier, remove_parts, world
from mega2bart.summarize.records import append_records, complete_records, result_from_dict
from mega2bart.summarize.summarizer import progress_bar

logger = logging.getLogger(__name__)


def evaluate_model(
    model_dir: str | Path,
    dataset: str,
    output_dir: str | Path,
    *,
    split: str = "test",
    limit: int | None = None,
    dataset_config: str | None = None,
    text_column: str | None = None,
    summary_column: str | None = None,
    max_input_tokens: int | None = None,
    overflow: Literal["windows", "truncate"] = "truncate",
    batch_size: int = 4,
    generation: GenerationOptions | None = None,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    progress: bool = True,
    dtype: str = "fp32",
) -> dict[str, Any] | None:
    """Generate summaries for a dataset split and score them.

    Writes `<output_dir>/eval_results.json` (ROUGE-1/2/L/Lsum with bootstrap intervals, the sentence
    splitter's name, generated-length statistics, the settings) and `<output_dir>/predictions.jsonl`
    (id, prediction, reference, per-example ROUGE F-measures, windows). Documents longer than the
    context are truncated as in training (`overflow="truncate"`), or windowed ("windows"). The model
    runs in `dtype` ("fp32", "bf16", or "fp16" on CUDA); `throughput` reports documents per hour of
    the generation (loading and scoring not counted).

    Earlier results of this function in `output_dir` are replaced; any other file of those names is
    refused (`ValueError`) before any work is done.

    Under `torchrun`/`accelerate launch` every process calls this with the same arguments: the
    examples are shared as in `summarize_in_parts`, and the first process scores them all and writes
    the same files as a single process.

    Returns:
        The content of eval_results.json (None on the other processes of a run under several).
    """
    from mega2bart.data import load_summarization_dataset, require_rows
    from mega2bart.metrics import SENTENCE_SPLITTER, aggregate_rouge, length_stats, rouge_per_example

    if limit is not None and limit < 1:
        raise ValueError(f"`limit` ({limit}) must be >= 1 or None (the whole split)")
    output_dir = Path(output_dir)
    _check_eval_output_dir(output_dir)
    resolve_dtype(dtype, inference_device())  # fail before loading the dataset
    data, stats = load_summarization_dataset(
        dataset, dataset_config, text_column=text_column, summary_column=summary_column
    )
    if split not in data:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; its splits are {sorted(data)}")
    require_rows(data, split, stats, dataset)
    rows = data[split]
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    summarizer = Summarizer.load(
        model_dir,
        dtype,
        max_input_tokens=max_input_tokens,
        batch_size=batch_size,
        generation=generation,
        overflow=overflow,
    )
    start = time.perf_counter()
    results = _summarize_split(summarizer, list(rows["id"]), list(rows["document"]), output_dir, progress=progress)
    seconds = time.perf_counter() - start
    if results is None:  # not the first of several processes: its part is written
        return None
    predictions = [r.summary for r in results]
    references = list(rows["summary"])
    per_example = rouge_per_example(predictions, references)  # scored once: the report and each record
    scores = aggregate_rouge(per_example, bootstrap_samples=bootstrap_samples, seed=seed)
    report = {
        "model": str(model_dir),
        "dataset": dataset,
        "split": split,
        "num_examples": len(rows),
        "rouge": scores,
        "sentence_splitter": SENTENCE_SPLITTER,
        "generated_length": length_stats(predictions, summarizer.tokenizer),
        "reference_length": length_stats(references, summarizer.tokenizer),
        "inputs": {
            "max_input_tokens": summarizer.max_input_tokens,
            "overflow": overflow,
            "truncated_or_windowed": sum(1 for r in results if r.num_tokens > summarizer.window),
        },
        "generation": {
            **summarizer.model.generation_config.to_diff_dict(),
            **(generation or GenerationOptions()).to_kwargs(),
        },
        "throughput": {**model_precision(summarizer.model), **throughput(len(rows), seconds)},
    }
    records = [
        {
            "id": result.id,
            "prediction": result.summary,
            "reference": reference,
            "rouge": {name: round(float(values[i]) * 100, 4) for name, values in per_example.items()},
            "num_tokens": result.num_tokens,
            "windows": [w.to_dict() for w in result.windows] if len(result.windows) > 1 else [],
        }
        for i, (result, reference) in enumerate(zip(results, references, strict=True))
    ]
    _write_outputs(
        output_dir,
        {
            "predictions.jsonl": "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
            "eval_results.json": json.dumps(report, indent=2, default=str),
        },
    )
    logger.info(
        "ROUGE-1/2/L/Lsum %.2f/%.2f/%.2f/%.2f on %d examples (%s documents/hour, %s) -> %s",
        *(scores[name]["mean"] for name in ("rouge1", "rouge2", "rougeL", "rougeLsum")),
        len(rows),
        report["throughput"]["documents_per_hour"],
        dtype,
        output_dir,
    )
    return report


def _write_outputs(output_dir: Path, texts: dict[str, str]) -> None:
    """Write the files `texts` ({name: text}) in `output_dir`, each whole or not at all: each goes to a hidden
    ".partial" file first, and they replace the files of their names only once all are written (a full disk
    while writing leaves the earlier results as they were); no partial file is left behind."""
    output_dir.mkdir(parents=True, exist_ok=True)
    staged = {name: output_dir / f".{name}.partial" for name in texts}
    try:
        for name, text in texts.items():
            staged[name].write_text(text, encoding="utf-8")
        for name, path in staged.items():
            os.replace(path, output_dir / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)


def _summarize_split(
    summarizer: Summarizer, ids: list[str], texts: list[str], output_dir: Path, *, progress: bool
) -> list[SummaryResult] | None:
    """The results of all examples in their order, on the first process; None on the others.

    The examples are grouped longest first (by the length the model sees) in groups of about
    `batch_size` generation inputs -- the same groups for one process or many, so the summaries do
    not depend on the number of processes -- and the groups are shared by `assign`. Each process
    writes its results to `<output_dir>/predictions.parts/part-RANK-of-WORLD.jsonl` (fsynced per
    group); the first process reads them all back and removes the folder.
    """
    rank, world_size = world()
    truncate = summarizer.overflow == "truncate"
    # ids are positions, which a split need not keep unique; lengths are what the model sees
    examples = [(str(k), text) for k, text in enumerate(texts)]
    pending = longest_first(summarizer, examples, cap=summarizer.window if truncate else None)
    groups = list(length_groups(pending, summarizer.batch_size, None if truncate else summarizer.window))
    owned = owned_groups(groups, rank, world_size)
    bar = progress_bar(progress and rank == 0, desc="examples", total=sum(map(len, owned)), unit="ex")
    parts = output_dir / "predictions.parts"
    results: dict[str, SummaryResult] = {}
    with process_barrier() as barrier:
        if world_size > 1:
            if rank == 0:
                if parts.is_dir():
                    remove_parts(parts)  # of an interrupted earlier run
                parts.mkdir(parents=True)
            barrier()
        part = part_file(parts, rank, world_size).open("w", encoding="utf-8") if world_size > 1 else None
        try:
            for group_results in summarized(summarizer, owned, bar):
                results.update((r.id, r) for r in group_results)
                if part is not None:
                    append_records(part, group_results, fsync=True)
        finally:
            if part is not None:
                part.close()
        if bar is not None:
            bar.close()
        if world_size > 1:
            barrier()
            if rank == 0:
                for path in sorted(parts.glob("part-*.jsonl")):
                    for line in complete_records(path):
                        result = result_from_dict(json.loads(line))
                        results.setdefault(result.id, result)
                remove_parts(parts)
            barrier()
    if rank != 0:
        return None
    if len(results) != len(ids):
        raise RuntimeError(
            f"evaluation has summaries for {len(results)} of {len(ids)} examples: a process's part file "
            f"({parts.name}/part-RANK-of-WORLD.jsonl) was incomplete; run the evaluation again"
        )
    return [dataclasses.replace(results[str(k)], id=doc_id) for k, doc_id in enumerate(ids)]


_EVAL_FILES = {
    "eval_results.json": ("rouge", "sentence_splitter", "num_examples"),  # keys its content has
    "predictions.jsonl": ("id", "prediction", "reference"),  # keys its first line has
}


def _check_eval_output_dir(output_dir: Path) -> None:
    """Raise unless every file `evaluate_model` writes into `output_dir` is absent, empty or its own."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {str(output_dir)!r} is a file, not a directory: pass a directory")
    for name, keys in _EVAL_FILES.items():
        path = output_dir / name
        if not path.exists() and not path.is_symlink():
            continue
        ours = False
        if path.is_file():
            if path.stat().st_size == 0:
                continue
            with path.open("rb") as fh:
                head = fh.read() if name.endswith(".json") else fh.readline()
            try:
                content = json.loads(head)
                ours = isinstance(content, dict) and all(key in content for key in keys)
            except ValueError:
                ours = False
        if not ours:
            raise ValueError(
                f"{str(path)!r} exists and was not written by mega2bart eval: it would be overwritten; "
                "move it away or pass another --output-dir"
            )


__all__ = ["evaluate_model"]
