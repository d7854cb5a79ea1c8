"""Long-document inference: batches by length, windows beyond the context, a summary of summaries.

`Summarizer(model, tokenizer)` summarises texts of any length:

1. A document that fits the context (`max_input_tokens`, default: the tokenizer's
   `model_max_length`, which the builder sets to the encoder's context) is summarised in one pass.
2. A longer one is cut into overlapping token windows (`window_overlap` tokens shared by
   neighbours); each window is summarised.
3. `merge="summarize"` (default): the window summaries, joined by newlines in document order, are
   summarised again -- recursively, level by level, while the joined text is still longer than the
   context (at most `max_levels` levels; then it is truncated, with a warning).
   `merge="concatenate"`: the window summaries joined by newlines are the summary (textsum-style).

Every result carries its provenance: for each level, each window's token span in that level's
input and the partial summary it produced, so each part of a merged input names the window it
came from. Windows of all documents in a group are generated together, sorted by length.

`summarize_files(...)` reads .txt/.md/.html/.jsonl files (or stdin, "-") with
`mega2bart.documents.read_documents` and writes one json line per document, flushed as soon as its
group is done, and the run's statistics beside it (`stats_path`); `skip_existing=True` resumes a
crashed job.
It never writes over something it did not write: an output that is one of the inputs, or a file
that is not a mega2bart summaries jsonl, is refused (`check_output`). A document that cannot be
summarised (empty, only whitespace, a null text field, not UTF-8) is skipped with a warning naming
it; UTF-8 is the only encoding read, so nothing is decoded with silent replacement characters.
Under `torchrun`/`accelerate launch` (WORLD_SIZE > 1) the groups of documents are shared between the
processes (longest first, each to the least loaded process), each process appends its records to its
own part file beside the output, and the first process merges the parts into the output in the
order a single process writes, and its statistics; a crash leaves the finished records in the parts
for `skip_existing`.
Evaluation on a dataset split (`evaluate_model`) is in `mega2bart.evaluation`, which uses these.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

import torch

from mega2bart.config_types import setting
from mega2bart.documents import STDIN, DocumentError, read_documents
from mega2bart.tokenization import special_tokens_around

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`--dtype` names -> the dtype the model's weights and activations use for inference."""


@dataclass
class GenerationOptions:
    """Generation settings; None keeps the model's `generation_config.json` value.

    Each field is the one declaration of its setting: `mega2bart eval` and `mega2bart summarize`
    take their generation options from these fields (help, flag; `mega2bart.cli`), and `min` is the
    range `__post_init__` checks.
    """

    num_beams: int | None = setting(None, help="Beams (default: the model's generation_config.json).", flag=True, min=1)
    max_new_tokens: int | None = setting(
        None, help="Longest summary in new tokens (default: the model's).", flag=True, min=1
    )
    min_new_tokens: int | None = setting(
        None, help="Shortest summary in new tokens (default: the model's).", flag=True, min=0
    )
    no_repeat_ngram_size: int | None = setting(
        None, help="Never repeat an n-gram of this size (default: the model's).", flag=True, min=0
    )
    length_penalty: float | None = setting(
        None, help="Beam length penalty; > 1 favours longer summaries (default: the model's).", flag=True
    )

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value, low = getattr(self, option.name), option.metadata.get("min")
            if value is not None and low is not None and value < low:
                raise ValueError(f"`{option.name}` ({value}) must be >= {low}")
        from mega2bart.builder.generation import generation_problems

        problems = generation_problems({"length_penalty": self.length_penalty})
        if problems:
            raise ValueError(problems[0])
        if self.min_new_tokens and self.max_new_tokens and self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"`min_new_tokens` ({self.min_new_tokens}) exceeds `max_new_tokens` ({self.max_new_tokens})"
            )

    def to_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Window:
    """One generation input: a token span of a document (level 0) or of joined summaries (level >= 1)."""

    level: int
    index: int
    token_start: int
    token_end: int
    summary: str = ""
    sources: list[int] = field(default_factory=list)
    """Level >= 1: indices of the previous level's windows whose summaries this span contains."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class SummaryResult:
    """A document's summary and how it was made."""

    id: str
    summary: str
    num_tokens: int
    """Document length in tokens (no special tokens)."""
    levels: int
    """1: the document fitted (or `concatenate`); n > 1: n - 1 merge levels above the windows."""
    windows: list[Window] = field(default_factory=list)
    truncated: bool = False
    """True if the last merge level still exceeded the context and was cut."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["windows"] = [w.to_dict() for w in self.windows]
        return out


def window_spans(num_tokens: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) spans of at most `window` tokens covering `num_tokens`, neighbours sharing
    `overlap` tokens; the last span ends exactly at `num_tokens`. One span if it fits."""
    if window < 1:
        raise ValueError(f"window ({window}) must be >= 1 token")
    if not 0 <= overlap < window:
        raise ValueError(f"window_overlap ({overlap}) must be >= 0 and below the window size ({window})")
    if num_tokens <= window:
        return [(0, num_tokens)]
    stride = window - overlap
    count = math.ceil((num_tokens - window) / stride) + 1
    return [(min(i * stride, num_tokens - window), min(i * stride, num_tokens - window) + window) for i in range(count)]


class Summarizer:
    """Summarise texts of any length with an encoder-decoder model (see the module docstring).

    Args:
        model / tokenizer: a mega2bart model (or any seq2seq model) and its tokenizer.
        max_input_tokens: the context, special tokens included; default `tokenizer.model_max_length`.
        window_overlap: tokens shared by neighbouring windows; default min(256, window // 8).
        batch_size: generation inputs per `generate` call (windows of similar length together).
        generation: overrides of the model's generation config.
        merge: "summarize" (a summary of the window summaries) or "concatenate".
        max_levels: most merge levels above the windows before the joined summaries are truncated.
        overflow: "windows" (default) or "truncate" (cut to the context, like training does).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_input_tokens: int | None = None,
        window_overlap: int | None = None,
        batch_size: int = 4,
        generation: GenerationOptions | None = None,
        merge: Literal["summarize", "concatenate"] = "summarize",
        max_levels: int = 3,
        overflow: Literal["windows", "truncate"] = "windows",
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        specials = special_tokens_around(tokenizer)  # `<s> ... </s>` for BART, added around every window
        self.lead_ids, self.trail_ids = list(specials.lead), list(specials.trail)
        self.num_specials = len(self.lead_ids) + len(self.trail_ids)
        context = max_input_tokens or tokenizer.model_max_length
        if not isinstance(context, int) or context > 10**7:
            raise ValueError(
                f"the tokenizer has no usable model_max_length ({context}): pass max_input_tokens explicitly"
            )
        if context <= self.num_specials + 1:
            raise ValueError(f"max_input_tokens ({context}) must exceed the {self.num_specials} special tokens")
        self.window = context - self.num_specials  # text tokens per window
        if window_overlap is None:
            window_overlap = min(256, self.window // 8)
        if not 0 <= window_overlap < self.window:
            raise ValueError(
                f"window_overlap ({window_overlap}) must be >= 0 and below the window of {self.window} text tokens "
                f"(max_input_tokens {context} minus {self.num_specials} special tokens)"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size ({batch_size}) must be >= 1")
        if merge not in ("summarize", "concatenate"):
            raise ValueError(f"merge ({merge!r}) must be 'summarize' or 'concatenate'")
        if overflow not in ("windows", "truncate"):
            raise ValueError(f"overflow ({overflow!r}) must be 'windows' or 'truncate'")
        if max_levels < 1:
            raise ValueError(f"max_levels ({max_levels}) must be >= 1")
        self.max_input_tokens = context
        self.window_overlap = window_overlap
        self.batch_size = batch_size
        self.generation = generation or GenerationOptions()
        from mega2bart.builder.generation import new_token_limits

        model_min = new_token_limits(model.generation_config)[1]
        if (
            self.generation.max_new_tokens
            and self.generation.min_new_tokens is None
            and model_min
            and model_min > self.generation.max_new_tokens
        ):
            logger.info(
                "min_new_tokens %d of the model's generation config lowered to max_new_tokens %d",
                model_min,
                self.generation.max_new_tokens,
            )
            self.generation = dataclasses.replace(self.generation, min_new_tokens=self.generation.max_new_tokens)
        self.merge = merge
        self.max_levels = max_levels
        self.overflow = overflow

    @classmethod
    def load(cls, model_dir: str | os.PathLike, dtype: str = "fp32", **options: Any) -> Summarizer:
        """A Summarizer of the saved model in `model_dir`, loaded for inference in `dtype`
        (`load_for_inference`); `options` are the constructor's keyword arguments."""
        model, tokenizer = load_for_inference(model_dir, dtype)
        return cls(model, tokenizer, **options)

    # ------------------------------------------------------------------ generation

    def generate_lengths(self) -> dict[str, int]:
        """The options' new-token limits as `max_length`/`min_length`: the form the model's own defaults are
        saved in (`mega2bart.builder.generation`), so they replace them without transformers' precedence warning."""
        from mega2bart.builder.generation import generation_lengths

        return generation_lengths(self.generation.max_new_tokens, self.generation.min_new_tokens)

    def generate_kwargs(self) -> dict[str, Any]:
        """The keyword arguments `generate` gets: the options set, lengths as `generate_lengths`."""
        new_tokens = ("max_new_tokens", "min_new_tokens")
        kwargs = {key: value for key, value in self.generation.to_kwargs().items() if key not in new_tokens}
        return {**kwargs, **self.generate_lengths()}

    def generate(self, token_lists: Sequence[list[int]], progress: Any | None = None) -> list[str]:
        """Summarise token lists (text tokens, specials added here), batched by length.

        A batch is right-padded to its longest input only: a MEGA encoder pads to a multiple of its
        chunk_size itself and slices its outputs back."""
        order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
        out: list[str] = [""] * len(token_lists)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            batch_ids = order[start : start + self.batch_size]
            features = [{"input_ids": [*self.lead_ids, *token_lists[i], *self.trail_ids]} for i in batch_ids]
            batch = self.tokenizer.pad(features, padding=True, return_tensors="pt")
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    **self.generate_kwargs(),
                )
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(batch_ids, texts, strict=True):
                out[i] = text.strip()
            if progress is not None:
                progress.update(len(batch_ids))
        return out

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]

    def summarize(
        self, texts: Sequence[str], ids: Sequence[str] | None = None, progress: bool = False
    ) -> list[SummaryResult]:
        """Summarise `texts` (any length); windows of all texts are generated together, by length.

        Level by level: every document still in progress is cut into windows (`_level_inputs`),
        all windows are generated in one `generate` call, and each document either has its summary
        or goes on with its window summaries joined as the next level's input (`_close_level`).
        """
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        states = []
        for doc_id, text in zip(ids, texts, strict=True):
            tokens = self._encode(text)
            result = SummaryResult(id=doc_id, summary="", num_tokens=len(tokens), levels=0)
            states.append(_DocumentState(result, tokens))
        active = states
        level = 0
        bar = _progress(progress, desc="windows")
        while active:
            inputs = [item for state in active for item in self._level_inputs(state, level)]
            if bar is not None:
                bar.total = (bar.total or 0) + len(inputs)
                bar.refresh()
            summaries = self.generate([item.tokens for item in inputs], progress=bar)
            windows: dict[_DocumentState, list[Window]] = {state: [] for state in active}  # in document order
            for item, summary in zip(inputs, summaries, strict=True):
                item.window.summary = summary
                windows[item.state].append(item.window)
            active = [state for state in active if self._close_level(state, windows[state], level)]
            level += 1
        if bar is not None:
            bar.close()
        return [state.result for state in states]

    def _level_inputs(self, state: _DocumentState, level: int) -> list[_WindowInput]:
        """The windows of `state`'s input at `level`: overlapping spans, or the first `window` tokens
        when it must be truncated (`overflow="truncate"`, or the last merge level is still too long)."""
        tokens = state.tokens
        if len(tokens) > self.window and (self.overflow == "truncate" or level >= self.max_levels):
            if level > 0:
                logger.warning(
                    "%s: the joined window summaries (%d tokens) still exceed the context after %d merge "
                    "levels: truncated to %d tokens",
                    state.result.id,
                    len(tokens),
                    level,
                    self.window,
                )
            state.result.truncated = True
            spans = [(0, self.window)]
        else:
            spans = window_spans(len(tokens), self.window, self.window_overlap)
        return [
            _WindowInput(state, Window(level, index, start, end, sources=state.sources(start, end)), tokens[start:end])
            for index, (start, end) in enumerate(spans)
        ]

    def _close_level(self, state: _DocumentState, windows: list[Window], level: int) -> bool:
        """Record `state`'s summarised windows of `level`; True if their summaries need another level."""
        result = state.result
        result.windows.extend(windows)
        result.levels = level + 1
        if len(windows) == 1:
            result.summary = windows[0].summary
            return False
        if self.merge == "concatenate":
            result.summary = "\n".join(w.summary for w in windows)
            return False
        state.tokens, state.part_spans = self._join([w.summary for w in windows])
        return True

    def _join(self, summaries: list[str]) -> tuple[list[int], list[tuple[int, int]]]:
        """The tokens of `summaries` joined by newlines, and each summary's [start, end) span in them
        (joined from the parts' own tokens, so every span is exact)."""
        separator = self._encode("\n")
        joined: list[int] = []
        spans: list[tuple[int, int]] = []
        for k, summary in enumerate(summaries):
            joined.extend(separator if k else [])
            part = self._encode(summary)
            spans.append((len(joined), len(joined) + len(part)))
            joined.extend(part)
        return joined, spans


@dataclass(eq=False)  # hashed by identity: a key of the per-level window lists
class _DocumentState:
    """One document's progress through the levels of `Summarizer.summarize`."""

    result: SummaryResult
    """Filled in level by level: windows, levels, and finally the summary."""
    tokens: list[int]
    """The input of the current level: the document's tokens, then its joined window summaries."""
    part_spans: list[tuple[int, int]] = field(default_factory=list)
    """The [start, end) span in `tokens` of each previous-level window summary (empty at level 0)."""

    def sources(self, start: int, end: int) -> list[int]:
        """Indices of the previous-level windows whose summaries overlap the span [start, end)."""
        return [k for k, (a, b) in enumerate(self.part_spans) if a < end and b > start]


@dataclass
class _WindowInput:
    """One generation input: a window of a document's current level and its tokens."""

    state: _DocumentState
    window: Window
    tokens: list[int]


def _progress(enabled: bool, desc: str, total: int | None = None, unit: str = "it") -> Any | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- output jsonl


SUMMARY_KEYS = tuple(f.name for f in dataclasses.fields(SummaryResult))
_RECORD_START = b'{"id": '  # every record `summarize_files` writes starts so (json.dumps keeps the field order)


def _summary_record(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """The record on one output line, or None and why it is not one."""
    try:
        record = json.loads(line)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(record, dict):
        return None, f"a JSON {type(record).__name__}, not an object"
    missing = [key for key in SUMMARY_KEYS if key not in record]
    if missing:
        return None, f"a JSON object that lacks the keys {missing}"
    return record, ""


def _scan_output(output: Path) -> tuple[set[str], int, int]:
    """(ids of the complete records, their length in bytes, the file's length) of a summaries jsonl.

    Only the end of the file may be incomplete: a crash mid-write leaves the start of a record
    without its newline (or, after a power loss, an unparsable last line). Anything else that is not
    a record `summarize_files` wrote raises `ValueError`, so no line of a file it did not write is
    ever dropped.
    """
    data = output.read_bytes()
    *lines, tail = data.split(b"\n")  # `tail`: the bytes after the last newline
    done: set[str] = set()
    good_end = 0
    for number, line in enumerate(lines, start=1):
        record, why = _summary_record(line)
        if record is None:
            if number == len(lines) and not tail and _torn(line, done):
                break
            if not done:
                raise ValueError(
                    f"output {str(output)!r} is not a summaries file written by mega2bart (line {number} is {why}); "
                    "it was left untouched: pass another --output"
                )
            raise ValueError(
                f"output {str(output)!r} line {number} is not a summary record ({why}) but lines before it are; "
                f"the file was left untouched: remove or repair line {number}, or write to another --output"
            )
        done.add(str(record["id"]))
        good_end += len(line) + 1
    else:
        if tail and not _torn(tail, done):
            raise ValueError(
                f"output {str(output)!r} is not a summaries file written by mega2bart (line {len(lines) + 1} is "
                f"{_summary_record(tail)[1]}); it was left untouched: pass another --output"
            )
    return done, good_end, len(data)


def _torn(fragment: bytes, done: set[str]) -> bool:
    """Whether the last line can be the remains of a record cut by a crash: a record without its
    newline, or bytes that are not JSON after other records, at the start of a record or zero-filled."""
    record, why = _summary_record(fragment)
    if record is not None:
        return True
    if why != "not valid JSON":  # a whole JSON value, but not ours
        return False
    return bool(done) or _RECORD_START.startswith(fragment[: len(_RECORD_START)]) or not fragment.strip(b"\x00")


def finished_ids(output: str | Path) -> set[str]:
    """Ids of the complete records in `output`; a torn last line (a crash mid-write) is cut off.

    Raises:
        ValueError: `output` is not a summaries jsonl written by mega2bart, or a line before its
            last one is damaged (the file is not changed then).
    """
    output = Path(output)
    if not output.is_file():
        return set()
    done, good_end, size = _scan_output(output)
    if good_end != size:
        logger.warning("%s: dropping an incomplete last record (%d bytes) before resuming", output, size - good_end)
        with output.open("r+b") as fh:
            fh.truncate(good_end)
    return done


def check_output(
    output: str | Path,
    inputs: Sequence[str | Path],
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    stdin: Any = None,
) -> None:
    """Raise unless `summarize_files` may write `output`; changes nothing.

    Refused: an output that is one of the inputs (symlinks and stdin redirected from it included),
    a directory, an existing non-empty file without `skip_existing` or `overwrite`, a file that is
    not a mega2bart summaries jsonl (with either), resuming into a pipe or device.
    """
    if skip_existing and overwrite:
        raise ValueError("pass either skip_existing (--skip-existing) or overwrite (--overwrite), not both")
    output = Path(output)
    if output.is_dir():
        example = str(output / "summaries.jsonl")
        raise ValueError(f"output {str(output)!r} is a directory: pass a file such as {example!r}")
    _check_parts(_parts_dir(output), skip_existing=skip_existing, overwrite=overwrite)
    if not output.exists():
        return
    out_stat = output.stat()
    for raw in inputs:
        if str(raw) == STDIN:
            in_stat = _stdin_stat(stdin)
        else:
            in_stat = Path(raw).stat() if Path(raw).exists() else None
        if (
            in_stat is not None
            and (in_stat.st_dev, in_stat.st_ino) == (out_stat.st_dev, out_stat.st_ino)
            and stat.S_ISREG(out_stat.st_mode)
        ):
            name = "standard input" if str(raw) == STDIN else repr(str(raw))
            raise ValueError(
                f"output {str(output)!r} is also an input ({name}): writing it would destroy the document; "
                "pass another --output"
            )
    if not stat.S_ISREG(out_stat.st_mode):
        if skip_existing:
            raise ValueError(
                f"cannot resume into {str(output)!r}: it is not a regular file (a terminal, pipe or device); "
                "drop --skip-existing or write to a file"
            )
        return
    if out_stat.st_size == 0:
        return
    if skip_existing:
        _scan_output(output)
    elif overwrite:
        with output.open("rb") as fh:
            first = fh.readline()
        record, why = _summary_record(first)
        if record is None and not (first.startswith(_RECORD_START) and not first.endswith(b"\n")):
            raise ValueError(
                f"--overwrite replaces only a summaries file written by mega2bart, and {str(output)!r} is not one "
                f"(line 1 is {why}): move it away or pass another --output"
            )
    else:
        raise FileExistsError(
            f"output {str(output)!r} exists: pass --skip-existing (skip_existing=True) to resume it, "
            "--overwrite to replace it, or another path"
        )


def _stdin_stat(stdin: Any) -> os.stat_result | None:
    try:
        return os.fstat((stdin or sys.stdin).fileno())
    except (AttributeError, OSError, ValueError):  # io.StringIO and test runners' stand-ins have no file
        return None


# ----------------------------------------------------------------------------- summarising into files


class _Pending(NamedTuple):
    """A document to summarise and the length in tokens by which work is grouped and shared."""

    id: str
    text: str
    num_tokens: int


def _longest_first(
    summarizer: Summarizer, documents: Sequence[tuple[str, str]], cap: int | None = None
) -> list[_Pending]:
    """`documents` (id, text) with their token counts (at most `cap`), longest first, input order on ties."""
    pending = [_Pending(doc_id, text, len(summarizer._encode(text))) for doc_id, text in documents]
    if cap is not None:
        pending = [doc._replace(num_tokens=min(doc.num_tokens, cap)) for doc in pending]
    return sorted(pending, key=lambda doc: -doc.num_tokens)


def _groups(documents: list[_Pending], windows_per_group: int, window: int | None) -> Iterator[list[_Pending]]:
    """Consecutive documents (sorted by length) until their level-0 windows reach `windows_per_group`
    (`window` None: one generation input per document, as with `overflow="truncate"`)."""
    group: list[_Pending] = []
    count = 0
    for doc in documents:
        group.append(doc)
        count += 1 if window is None else max(1, math.ceil(doc.num_tokens / window))
        if count >= windows_per_group:
            yield group
            group, count = [], 0
    if group:
        yield group


def _summarized(
    summarizer: Summarizer, groups: Iterable[list[_Pending]], bar: Any | None
) -> Iterator[list[SummaryResult]]:
    """The results of each group in turn (the progress bar advanced once the caller has used them)."""
    for group in groups:
        results = summarizer.summarize([doc.text for doc in group], ids=[doc.id for doc in group])
        yield results
        if bar is not None:
            bar.update(len(results))


def _append_records(fh: TextIO, results: list[SummaryResult], *, fsync: bool) -> None:
    """Append one group's records (one json line each) and flush them, fsynced when `fsync` (a regular
    file: a pipe or terminal cannot be), so a crash loses at most the group in progress."""
    fh.write("".join(json.dumps(result.to_dict(), ensure_ascii=False) + "\n" for result in results))
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())


def _windowed(result: SummaryResult) -> bool:
    """Whether the document went through windows (did not fit the context in one pass)."""
    return result.levels > 1 or len(result.windows) > 1


def _write_groups(
    summarizer: Summarizer, groups: Iterable[list[_Pending]], fh: TextIO, *, fsync: bool, bar: Any | None
) -> tuple[int, int]:
    """Summarise `groups` into `fh` group by group (`_append_records`); returns (written, windowed)."""
    written = windowed = 0
    for results in _summarized(summarizer, groups, bar):
        _append_records(fh, results, fsync=fsync)
        written += len(results)
        windowed += sum(map(_windowed, results))
    return written, windowed


def _read_inputs(inputs: Sequence[str | Path], stdin: Any) -> tuple[list[tuple[str, str]], list[DocumentError]]:
    """The (id, text) documents of `inputs` and those refused (each logged as a warning).

    Raises:
        ValueError: no document is left, or an id appears twice.
    """
    refused: list[DocumentError] = []
    documents = list(read_documents(inputs, stdin=stdin, refused=refused))
    if len(refused) == 1 and not documents:
        raise ValueError(f"{refused[0]}: nothing to summarise")
    for error in refused:
        logger.warning("skipped %s", error)
    if refused and not documents:
        raise ValueError(f"all {len(refused)} documents were refused (first: {refused[0]}): nothing to summarise")
    seen: set[str] = set()
    for doc_id, _ in documents:
        if doc_id in seen:
            raise ValueError(f"document id {doc_id!r} appears twice in the inputs: ids must be unique")
        seen.add(doc_id)
    return documents, refused


def summarize_files(
    summarizer: Summarizer,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    skip_existing: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stdin: Any = None,
) -> dict[str, int]:
    """Summarise documents from files into `output` (jsonl, one record per document).

    Documents are processed in length-sorted groups of about `summarizer.batch_size` windows; each
    group's records are appended and flushed (and fsynced, if `output` is a regular file) as soon as
    it is done, so a crash loses at most the group in progress. With `skip_existing`, documents whose
    id is already in `output` are skipped and only a torn last line is dropped; with `overwrite`, an
    earlier summaries file is replaced; with neither, an existing non-empty `output` is an error.
    `output` is never one of the inputs nor a file mega2bart did not write (see `check_output`).
    Documents that cannot be summarised (see `mega2bart.documents.read_documents`) are skipped with
    a warning; if no document is left, nothing is written and a `ValueError` says why. The run's
    counts, dtype, device and speed are written to `stats_path(output)` beside a regular file.

    Under several processes (WORLD_SIZE > 1, see `summarize_in_parts`) every process calls this with
    the same arguments, and the output and its statistics are those a single process writes (the
    first process writes them; the speed is that of all processes, by the wall clock).

    Returns:
        {"documents", "skipped", "written", "windowed", "refused", "seconds", "documents_per_hour"}
        (under several processes, "written" and "windowed" of all processes on the first one and of
        its own part elsewhere).
    """
    output = Path(output)
    check_output(output, inputs, skip_existing=skip_existing, overwrite=overwrite, stdin=stdin)
    documents, refused = _read_inputs(inputs, stdin)
    parts = _parts_dir(output)
    rank, world_size = _world()
    if world_size > 1 or (parts.exists() and skip_existing):
        start = time.perf_counter()
        counts = summarize_in_parts(summarizer, documents, output, overwrite=overwrite, progress=progress)
        counts = {"documents": len(documents) + len(refused), **counts, "refused": len(refused)}
        return _report_run(summarizer, output, counts, time.perf_counter() - start, write_stats=rank == 0)
    if overwrite and parts.is_dir():  # the unmerged parts of an earlier run under several processes
        _remove_parts(parts)
    done = finished_ids(output) if skip_existing else set()
    todo = [(i, t) for i, t in documents if i not in done]
    skipped = len(documents) - len(todo)
    if skipped:
        logger.info("skipping %d documents already in %s", skipped, output)
    groups = _groups(_longest_first(summarizer, todo), summarizer.batch_size, summarizer.window)
    output.parent.mkdir(parents=True, exist_ok=True)
    bar = _progress(progress, desc="documents", total=len(todo), unit="doc")
    start = time.perf_counter()
    with output.open("w" if overwrite else "a", encoding="utf-8") as fh:
        regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)  # a pipe or terminal cannot be fsynced
        written, windowed = _write_groups(summarizer, groups, fh, fsync=regular, bar=bar)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    counts = {
        "documents": len(documents) + len(refused),
        "skipped": skipped,
        "written": written,
        "windowed": windowed,
        "refused": len(refused),
    }
    return _report_run(summarizer, output, counts, seconds, write_stats=regular)


def _report_run(
    summarizer: Summarizer, output: Path, counts: dict[str, int], seconds: float, *, write_stats: bool
) -> dict[str, Any]:
    """`counts` + the speed of the documents written (skipped ones cost nothing), logged, and with
    `write_stats` (a regular output, the first process) written to `stats_path(output)` with the
    dtype and device, unless a file there was not written by mega2bart."""
    speed = throughput(counts["written"], seconds)
    timing = {"seconds": speed["seconds"], "documents_per_hour": speed["documents_per_hour"]}
    run = {**counts, **_precision(summarizer.model), **timing}
    stats = stats_path(output)
    if write_stats and not _is_ours(stats, "documents_per_hour"):
        logger.warning("%s exists and was not written by mega2bart: run statistics not written", stats)
        write_stats = False
    if write_stats:
        stats.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "summarised %s in %.1f s (%s documents/hour) -> %s%s",
        counts,
        seconds,
        run["documents_per_hour"],
        output,
        f", run statistics in {stats}" if write_stats else "",
    )
    return {**counts, **timing}


def _is_ours(path: Path, key: str) -> bool:
    """True when `path` is absent or a JSON object holding `key` (a file mega2bart wrote, safe to replace)."""
    if not path.exists():
        return True
    try:
        return path.is_file() and key in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def stats_path(output: str | Path) -> Path:
    """Where `summarize_files` writes the statistics of its last run: `summaries.jsonl` -> `summaries.stats.json`."""
    output = Path(output)
    return output.with_name(output.stem + ".stats.json")


# ----------------------------------------------------------------------------- loading


def inference_device() -> torch.device:
    """CUDA when available (the process's own GPU under torchrun: LOCAL_RANK), else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    """`fp32` | `bf16` | `fp16` -> torch dtype, refusing what the device cannot run (fp16 on CPU)."""
    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(DTYPES)}: pass --dtype fp32, bf16 or fp16")
    device = torch.device(device)
    if name == "fp16" and device.type == "cpu":
        raise ValueError(
            "dtype fp16 is not supported on CPU (half-precision kernels are missing or slow there): "
            "pass --dtype bf16 or --dtype fp32, or run on a CUDA GPU"
        )
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"dtype bf16 is not supported by this GPU ({torch.cuda.get_device_name(device)}): pass --dtype fp16 or fp32"
        )
    return DTYPES[name]


def load_for_inference(model_dir: str | os.PathLike, dtype: str = "fp32") -> tuple[Any, Any]:
    """A saved mega2bart model in eval mode, in `dtype`, on CUDA when available (else the CPU), + its tokenizer."""
    from mega2bart.builder import load_mega2bart

    device = inference_device()
    torch_dtype = resolve_dtype(dtype, device)  # before loading: a wrong choice fails at once
    model, tokenizer = load_mega2bart(model_dir, dtype=torch_dtype)
    model = model.to(device=device, dtype=torch_dtype).eval()
    logger.info("model loaded for inference on %s in %s", device, dtype)
    return model, tokenizer


def throughput(documents: int, seconds: float) -> dict[str, Any]:
    """{"documents", "seconds", "documents_per_hour"} of one run (None per hour when nothing was timed)."""
    return {
        "documents": documents,
        "seconds": round(seconds, 3),
        "documents_per_hour": round(documents * 3600.0 / seconds, 1) if seconds > 0 else None,
    }


def _precision(model: Any) -> dict[str, str]:
    parameter = next(model.parameters())
    name = {dtype: key for key, dtype in DTYPES.items()}.get(parameter.dtype, str(parameter.dtype))
    return {"dtype": name, "device": parameter.device.type}


# ----------------------------------------------------------------------------- several processes


PARTS_SUFFIX = ".parts"
"""`<output>.parts/`: the part files of a run under several processes, until they are merged."""
# every process waits at the end for the slowest one; a process that dies is noticed by the launcher
# (torchrun stops the others), so the wait is bounded by the work, not by this timeout
_BARRIER_TIMEOUT = timedelta(hours=24)


def _world() -> tuple[int, int]:
    """(rank, world size) as torchrun and accelerate launch set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + PARTS_SUFFIX)


def _part_file(parts: Path, rank: int, world_size: int) -> Path:
    return parts / f"part-{rank:05d}-of-{world_size:05d}.jsonl"


@contextmanager
def _barrier() -> Iterator[Any]:
    """A function that waits for every process; joins a gloo group first if none is set up yet
    (gloo works beside CUDA too: the barrier only exchanges a CPU tensor)."""
    _, world_size = _world()
    if world_size == 1:
        yield lambda: None
        return
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo", timeout=_BARRIER_TIMEOUT)
    try:
        yield dist.barrier
    finally:
        if created:
            dist.destroy_process_group()


def _remove_parts(parts: Path) -> None:
    """Delete the part files in `parts`, then the folder if nothing else is in it."""
    for path in parts.glob("part-*.jsonl"):
        path.unlink()
    try:
        parts.rmdir()
    except OSError:
        logger.warning("left %s in place: it holds files mega2bart did not write", parts)


def _check_parts(parts: Path, *, skip_existing: bool, overwrite: bool) -> None:
    """Raise unless the parts folder of an output is absent or (with a flag) holds only summary records."""
    if not parts.exists() and not parts.is_symlink():
        return
    if not parts.is_dir():
        raise ValueError(
            f"{str(parts)!r} is in the way of the part files of a run under several processes: move it away "
            "or pass another --output"
        )
    files = sorted(parts.glob("part-*.jsonl"))
    if files and not (skip_existing or overwrite):
        raise FileExistsError(
            f"{str(parts)!r} holds the unmerged parts of an interrupted run: pass --skip-existing "
            "(skip_existing=True) to resume it, --overwrite to discard it, or another --output"
        )
    for path in files:
        _scan_output(path)  # a foreign or damaged part raises; nothing is changed


def _complete_records(path: Path) -> list[bytes]:
    """The complete record lines of a summaries jsonl (a torn last line left out, the file unchanged)."""
    if not path.is_file():
        return []
    _, good_end, _ = _scan_output(path)
    return path.read_bytes()[:good_end].split(b"\n")[:-1]


def _assign(groups: list[list[_Pending]], world_size: int) -> list[int]:
    """The process of each group: in order (longest first), each to the process with the fewest tokens
    so far, the lowest rank on ties. Deterministic, so every process computes the same plan."""
    load = [0] * world_size
    owners = []
    for group in groups:
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners.append(rank)
        load[rank] += sum(max(1, doc.num_tokens) for doc in group)
    return owners


def _owned(groups: list[list[_Pending]], rank: int, world_size: int) -> list[list[_Pending]]:
    """The groups `_assign` gives to process `rank`."""
    return [group for group, owner in zip(groups, _assign(groups, world_size), strict=True) if owner == rank]


def _record_ids(path: Path) -> set[str]:
    """Ids of the complete records of a summaries jsonl (none if it does not exist)."""
    return {str(json.loads(line)["id"]) for line in _complete_records(path)}


def summarize_in_parts(
    summarizer: Summarizer,
    documents: Sequence[tuple[str, str]],
    output: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Summarise `documents` (unique ids) with every process of the job into `output`, resuming.

    1. With `overwrite`, the first process removes the parts and empties `output`; each process
       cuts a torn last line off its own part file (`<output>.parts/part-RANK-of-WORLD.jsonl`).
    2. Documents already in `output` (unless `overwrite`) or in any part file (of this run or of one
       with another number of processes) are done; the rest are grouped as a single process groups
       them, and the groups are shared by `_assign`.
    3. Each process appends each group's records to its part file (`_write_groups`, as a single
       process appends to the output: flushed and fsynced per group), so a crash loses only the
       groups in progress.
    4. The first process writes the output's earlier records, then the parts' records in the order
       a single process writes them (longest document first, input order on ties) to a temporary
       file, fsyncs it, renames it onto `output` and removes the parts.

    Returns:
        {"skipped", "written", "windowed"}: "written" and "windowed" count the records this run
        added, of all processes on the first one and its own elsewhere.
    """
    rank, world_size = _world()
    parts = _parts_dir(output)
    if output.exists() and not output.is_file():
        raise ValueError(
            f"output {str(output)!r} is not a regular file: runs under several processes (or resuming their "
            "parts) merge into a file; pass a file path as --output"
        )
    mine = _part_file(parts, rank, world_size)
    with _barrier() as barrier:
        if rank == 0:
            if overwrite and parts.is_dir():
                _remove_parts(parts)
            if overwrite and output.is_file():  # emptied now, as one process does: a crash cannot revive it
                output.open("w").close()
            parts.mkdir(parents=True, exist_ok=True)
        barrier()
        finished_ids(mine)  # only its owner changes a part file
        barrier()
        earlier = set() if overwrite else _record_ids(output)
        done = earlier.union(*(_record_ids(path) for path in sorted(parts.glob("part-*.jsonl"))))
        barrier()  # everyone has read the same state before anyone writes
        todo = [(i, t) for i, t in documents if i not in done]
        groups = list(_groups(_longest_first(summarizer, todo), summarizer.batch_size, summarizer.window))
        owned = _owned(groups, rank, world_size)
        logger.info(
            "process %d of %d: %d of %d groups (%d documents; %d already done)",
            rank, world_size, len(owned), len(groups), sum(map(len, owned)), len(documents) - len(todo),
        )  # fmt: skip
        bar = _progress(progress and rank == 0, desc="documents (process 0)", total=sum(map(len, owned)), unit="doc")
        with mine.open("a", encoding="utf-8") as fh:
            written, windowed = _write_groups(summarizer, owned, fh, fsync=True, bar=bar)
        if bar is not None:
            bar.close()
        barrier()
        if rank == 0:
            position = {doc_id: index for index, (doc_id, _) in enumerate(documents)}
            added = _merge_parts(output, parts, position, keep_output=not overwrite)
            # of all processes: the merged records less those finished before this run (in the parts of an
            # interrupted one)
            new = [record for record in added if str(record.id) not in done]
            written, windowed = len(new), sum(map(_windowed, new))
        barrier()  # the output is complete when any process returns
    return {"skipped": len(documents) - len(todo), "written": written, "windowed": windowed}


def _result_from_dict(record: dict[str, Any]) -> SummaryResult:
    """A `SummaryResult` back from its json record (keys other than its fields ignored)."""
    windows = [Window(**w) for w in record["windows"]]
    return SummaryResult(**{**{key: record[key] for key in SUMMARY_KEYS}, "windows": windows})


def _merge_parts(output: Path, parts: Path, position: dict[str, int], *, keep_output: bool) -> list[SummaryResult]:
    """Write `output` = its complete records (if `keep_output`) + the parts' other records in the order of
    a single process; atomically (a temporary file renamed onto it); remove `parts`. Returns the records added."""
    kept = _complete_records(output) if keep_output else []
    kept_ids = {str(json.loads(line)["id"]) for line in kept}
    added: dict[str, tuple[bytes, SummaryResult]] = {}
    for path in sorted(parts.glob("part-*.jsonl")):
        for line in _complete_records(path):
            result = _result_from_dict(json.loads(line))
            if str(result.id) not in kept_ids:
                added.setdefault(str(result.id), (line, result))
    stray = [doc_id for doc_id in added if doc_id not in position]
    if stray:
        logger.warning(
            "%d records in %s are of documents not among the inputs (e.g. %r): kept at the end",
            len(stray),
            parts,
            stray[0],
        )
    order = sorted(added, key=lambda i: (i not in position, -added[i][1].num_tokens, position.get(i, 0)))
    temporary = output.with_name(f".{output.name}.merging")
    with temporary.open("wb") as fh:
        fh.write(b"".join(line + b"\n" for line in [*kept, *(added[i][0] for i in order)]))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, output)
    directory = os.open(output.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)
    _remove_parts(parts)
    logger.info("merged %d records from %s into %s", len(added), parts, output)
    return [result for _, result in added.values()]


__all__ = [
    "GenerationOptions",
    "SummaryResult",
    "Summarizer",
    "Window",
    "check_output",
    "finished_ids",
    "load_for_inference",
    "resolve_dtype",
    "stats_path",
    "summarize_files",
    "summarize_in_parts",
    "window_spans",
]
