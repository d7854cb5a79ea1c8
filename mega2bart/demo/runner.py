"""The work behind the page, without Gradio: `DemoModel` holds a saved model loaded once and, for one document at
a time, gives the generation defaults, the planner's estimate (`estimate`) and a summary (`run`): the document is
written to a run folder as a file and summarised by `summarize_files`, the function of `mega2bart summarize`, so
it is read by the same reader (`mega2bart.documents.read_documents`) and its record is the one `summarize` writes.
A run reports each finished batch of windows and stops at the next decoding step once its cancel event is set."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from mega2bart.documents import JSONL_SUFFIXES, SUPPORTED_SUFFIXES, read_documents
from mega2bart.summarize import GenerationOptions, Summarizer, load_for_inference, summarize_files

from .estimate import Estimate, plan_document
from .export import level_table, record_markdown, window_table

logger = logging.getLogger(__name__)

PASTED_NAME = "pasted-text.txt"
"""The file name (and record id) of a pasted text."""
KEEP_RUNS = 32
"""Run folders kept for their downloads; older ones are removed when a new run starts."""
DOCUMENT_SUFFIXES = tuple(suffix for suffix in SUPPORTED_SUFFIXES if suffix not in JSONL_SUFFIXES)
"""What the page reads: one document per file (a .jsonl of many documents is `mega2bart summarize`'s)."""
SETTINGS = tuple(field.name for field in dataclasses.fields(GenerationOptions))
"""The generation settings of the page, in its order: beams, max/min new tokens, no-repeat n-grams, length penalty."""

Progress = Callable[[int, int, int], None]
"""Called with (level, windows done, windows of the level) before and after each batch of windows."""


class Cancelled(Exception):
    """The run was stopped (its cancel event set)."""


@dataclass
class RunResult:
    """One summarised document, as the page shows it."""

    record: dict[str, Any]
    """The record `mega2bart summarize` writes (its id the file's name)."""
    windows: dict[str, list[Any]]
    levels: dict[str, list[Any]]
    json_path: Path
    markdown_path: Path
    seconds: float
    estimate: Estimate | None


class DemoModel:
    """A saved mega2bart model loaded once for the page; `max_input_tokens`, `window_overlap` and `batch_size` are
    `Summarizer`'s; `work_dir` holds the run folders (default: a new temporary folder; Gradio takes the downloads
    from the system's temporary folder or the current one).

    Raises:
        BuildError: `model_dir` is not a model directory mega2bart can describe (before anything loads).
        ValueError: a bad dtype or Summarizer option.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        dtype: str = "fp32",
        max_input_tokens: int | None = None,
        window_overlap: int | None = None,
        batch_size: int = 4,
        work_dir: str | os.PathLike | None = None,
    ) -> None:
        from mega2bart.builder import describe_model
        from mega2bart.builder.generation import new_token_limits
        from mega2bart.plan import PlanError, load_shape, measure_matmul_rate, measure_model_efficiency

        self.model_dir = Path(model_dir)
        self.description = describe_model(self.model_dir)  # a one-line BuildError for a wrong directory, at once
        self.model, self.tokenizer = load_for_inference(self.model_dir, dtype)
        self.options = {
            "max_input_tokens": max_input_tokens,
            "window_overlap": window_overlap,
            "batch_size": batch_size,
        }
        self.layout = Summarizer(self.model, self.tokenizer, **self.options)  # the options checked; window, specials
        # the estimate tokenizes while a run may be generating: its own copy (a fast tokenizer is not shared safely)
        self.estimate_tokenizer = copy.deepcopy(self.tokenizer)
        self.separator = len(self.layout._encode("\n"))
        self.device = next(self.model.parameters()).device.type
        self.dtype = dtype
        try:
            self.shape = load_shape(self.model_dir)
        except PlanError as exc:  # a model the planner does not know: the page runs without estimates
            logger.warning("no estimates: %s", exc)
            self.shape = None
        # the matmul rate and the model's own share of it (one encoder layer's forward), measured once for the page
        self.rate = (
            measure_model_efficiency(
                self.shape.encoder,
                measure_matmul_rate(self.device, dtype),
                self.device,
                dtype,  # type: ignore[arg-type]
            )
            if self.shape is not None
            else None
        )
        config = self.model.generation_config
        max_new, min_new = new_token_limits(config)
        self.defaults = GenerationOptions(
            num_beams=config.num_beams,
            max_new_tokens=max_new,
            min_new_tokens=min_new,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            length_penalty=config.length_penalty,
        )
        self.work_dir = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="mega2bart-demo-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._runs = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ input

    def settings(self, **values: Any) -> GenerationOptions:
        """`GenerationOptions` of the page's fields (`SETTINGS`); an empty field keeps the model's default.

        Raises:
            ValueError: a value out of range (one line, naming the setting).
        """
        unknown = set(values) - set(SETTINGS)
        if unknown:
            raise ValueError(f"unknown generation settings {sorted(unknown)}: the page has {list(SETTINGS)}")
        chosen = {}
        for name in SETTINGS:
            value = values.get(name)
            if value is None or value == "":
                value = getattr(self.defaults, name)
            elif name != "length_penalty":
                if float(value) != int(float(value)):
                    raise ValueError(f"`{name}` ({value}) must be a whole number")
                value = int(float(value))
            else:
                value = float(value)
            chosen[name] = value
        return GenerationOptions(**chosen)

    def text_of(self, text: str | None, file: str | os.PathLike | None) -> str:
        """The text of the page's input: the pasted `text`, or `file` read as `mega2bart summarize` reads it.

        Raises:
            ValueError: neither or both given, a file the page does not read, or the reader's one-line error (an
                empty file, not UTF-8, ...) naming the file by its name.
        """
        _check_input(text, file)
        if not file:
            return text or ""
        try:
            return next(iter(read_documents([file])))[1]
        except (ValueError, OSError) as exc:
            raise ValueError(str(exc).replace(f"{Path(file).parent}{os.sep}", "")) from None

    def document(self, text: str | None, file: str | os.PathLike | None) -> Path:
        """The page's input as a file in a new run folder: a copy of `file` under its own name, or the pasted
        `text` as PASTED_NAME.

        Raises:
            ValueError: neither or both given, or a file the page does not read.
        """
        _check_input(text, file)
        run_dir = self._new_run_dir()
        if file:
            path = run_dir / Path(file).name
            shutil.copyfile(file, path)
        else:
            path = run_dir / PASTED_NAME
            path.write_text(text or "", encoding="utf-8")
        return path

    def _new_run_dir(self) -> Path:
        with self._lock:
            self._runs += 1
            number = self._runs
        run_dir = self.work_dir / f"run-{number:06d}"
        run_dir.mkdir()
        for old in sorted(self.work_dir.glob("run-*"))[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)
        return run_dir

    # ------------------------------------------------------------------ estimate and run

    def estimate(self, text: str, generation: GenerationOptions) -> Estimate | None:
        """The planner's estimate for summarising `text` with `generation` (None when the planner does not know
        the model)."""
        if self.shape is None:
            return None
        tokens = len(self.estimate_tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"])
        return plan_document(
            self.shape,
            tokens,
            window=self.layout.window,
            overlap=self.layout.window_overlap,
            specials=self.layout.num_specials,
            separator=self.separator,
            batch_size=self.layout.batch_size,
            beams=int(generation.num_beams or 1),
            new_tokens=int(generation.max_new_tokens or 1),
            merge=self.layout.merge,
            max_levels=self.layout.max_levels,
            dtype=self.dtype,
            device=self.device,
            rate=self.rate,
        )

    def run(
        self,
        path: Path,
        generation: GenerationOptions,
        progress: Progress | None = None,
        cancel: threading.Event | None = None,
    ) -> RunResult:
        """Summarise the document at `path` (from `document`) with `summarize_files`, its record and downloads
        written beside it.

        Raises:
            ValueError: a document the reader refuses (one line, naming the file by its name).
            Cancelled: `cancel` was set.
        """
        estimate = self.estimate(self.text_of(None, path), generation)
        summarizer = _PageSummarizer(
            self.model, self.tokenizer, generation=generation, report=progress, cancel=cancel, **self.options
        )
        output = path.parent / "summaries.jsonl"
        start = time.perf_counter()
        try:
            summarize_files(summarizer, [path], output, progress=False)
        except ValueError as exc:
            raise ValueError(str(exc).replace(f"{path.parent}{os.sep}", "")) from None
        seconds = time.perf_counter() - start
        record = json.loads(output.read_text(encoding="utf-8").splitlines()[0])
        record["id"] = path.name
        stem = Path(path.name).stem
        json_path = path.parent / f"{stem}.summary.json"
        json_path.write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
        markdown_path = path.parent / f"{stem}.summary.md"
        markdown_path.write_text(record_markdown(record, generation.to_kwargs()), encoding="utf-8")
        return RunResult(
            record=record,
            windows=window_table(record),
            levels=level_table(record),
            json_path=json_path,
            markdown_path=markdown_path,
            seconds=seconds,
            estimate=estimate,
        )

    def model_lines(self) -> list[str]:
        """What `mega2bart info` prints about the model: parts, parameters, random-init weights, EMA reach,
        provenance; then its warnings."""
        return [*self.description.summary_lines(), *(f"warning: {w}" for w in self.description.warnings)]


def _check_input(text: str | None, file: str | os.PathLike | None) -> None:
    if file and text and text.strip():
        raise ValueError("give either a pasted text or a file, not both: clear one of them")
    if not file and not (text and text.strip()):
        raise ValueError(f"nothing to summarise: paste a text or drop a file ({' '.join(DOCUMENT_SUFFIXES)})")
    if file and Path(file).suffix.lower() not in DOCUMENT_SUFFIXES:
        raise ValueError(
            f"cannot read {Path(file).name!r}: the page reads {', '.join(DOCUMENT_SUFFIXES)} files "
            "(a .jsonl of many documents: `mega2bart summarize`)"
        )


class _PageSummarizer(Summarizer):
    """A `Summarizer` that reports each batch of windows (`report`) and stops when `cancel` is set: between
    batches (`Cancelled`), and within one, at the next decoding step (a stopping criterion)."""

    def __init__(
        self, model: Any, tokenizer: Any, *, report: Progress | None, cancel: threading.Event | None, **options: Any
    ) -> None:
        super().__init__(model, tokenizer, **options)
        self.report = report
        self.cancel = cancel or threading.Event()
        self.level = 0

    def generate_kwargs(self) -> dict[str, Any]:
        return {**super().generate_kwargs(), "stopping_criteria": StoppingCriteriaList([_StopWhenSet(self.cancel)])}

    def generate(self, token_lists: Any, progress: Any | None = None) -> list[str]:
        tracker = _LevelProgress(self.level, len(token_lists), self.report, self.cancel)
        tracker.update(0)
        texts = super().generate(token_lists, progress=tracker)  # one call per level: `Summarizer.summarize`
        self.level += 1
        return texts


class _LevelProgress:
    """The progress object `Summarizer.generate` advances after each batch."""

    def __init__(self, level: int, total: int, report: Progress | None, cancel: threading.Event) -> None:
        self.level, self.total, self.done = level, total, 0
        self.report, self.cancel = report, cancel

    def update(self, count: int) -> None:
        if self.cancel.is_set():
            raise Cancelled("stopped")
        self.done += count
        if self.report is not None:
            self.report(self.level, self.done, self.total)


class _StopWhenSet(StoppingCriteria):
    """A `generate` stopping criterion: every row is done once `event` is set."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


__all__ = ["DOCUMENT_SUFFIXES", "PASTED_NAME", "SETTINGS", "Cancelled", "DemoModel", "Progress", "RunResult"]
