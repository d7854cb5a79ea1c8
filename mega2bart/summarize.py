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

`summarize_files(...)` reads .txt/.md/.html/.jsonl files (or stdin, "-") and writes one json line
per document, flushed as soon as its group is done; `skip_existing=True` resumes a crashed job.
`evaluate_model(...)` generates for a dataset split and writes ROUGE with bootstrap intervals,
length statistics and per-example predictions.
"""

from __future__ import annotations

import dataclasses
import html.parser
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
"""`--dtype` names -> the dtype the model's weights and activations use for inference."""

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
HTML_SUFFIXES = (".html", ".htm")
JSONL_SUFFIXES = (".jsonl",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES
JSONL_TEXT_FIELDS = ("text", "document", "article")
STDIN = "-"


@dataclass
class GenerationOptions:
    """Generation settings; None keeps the model's `generation_config.json` value."""

    num_beams: int | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    no_repeat_ngram_size: int | None = None
    length_penalty: float | None = None

    def __post_init__(self) -> None:
        for name in ("num_beams", "max_new_tokens"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` ({value}) must be >= 1")
        for name in ("min_new_tokens", "no_repeat_ngram_size"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"`{name}` ({value}) must be >= 0")
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
        # the special tokens around one sequence (`<s> ... </s>` for BART), found by tokenizing a probe
        full, bare = tokenizer("a")["input_ids"], tokenizer("a", add_special_tokens=False)["input_ids"]
        lead = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.lead_ids, self.trail_ids = list(full[:lead]), list(full[lead + len(bare) :])
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
        model_min = getattr(model.generation_config, "min_new_tokens", None)
        if self.generation.max_new_tokens and self.generation.min_new_tokens is None and model_min \
                and model_min > self.generation.max_new_tokens:
            logger.info("min_new_tokens %d of the model's generation config lowered to max_new_tokens %d",
                        model_min, self.generation.max_new_tokens)
            self.generation = dataclasses.replace(self.generation, min_new_tokens=self.generation.max_new_tokens)
        self.merge = merge
        self.max_levels = max_levels
        self.overflow = overflow
        encoder_config = getattr(getattr(model.config, "encoder", None), "use_chunking", False)
        self.pad_multiple = int(model.config.encoder.chunk_size) if encoder_config else None

    # ------------------------------------------------------------------ generation

    def generate(self, token_lists: Sequence[list[int]], progress: Any | None = None) -> list[str]:
        """Summarise token lists (text tokens, specials added here), batched by length."""
        order = sorted(range(len(token_lists)), key=lambda i: -len(token_lists[i]))
        out: list[str] = [""] * len(token_lists)
        device = next(self.model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            batch_ids = order[start : start + self.batch_size]
            features = [
                {"input_ids": [*self.lead_ids, *token_lists[i], *self.trail_ids]} for i in batch_ids
            ]
            batch = self.tokenizer.pad(
                features, padding=True, pad_to_multiple_of=self.pad_multiple, return_tensors="pt"
            )
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=batch["attention_mask"].to(device),
                    **self.generation.to_kwargs(),
                )
            texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for i, text in zip(batch_ids, texts):
                out[i] = text.strip()
            if progress is not None:
                progress.update(len(batch_ids))
        return out

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]

    def summarize(self, texts: Sequence[str], ids: Sequence[str] | None = None, progress: bool = False) -> list[SummaryResult]:
        """Summarise `texts` (any length); windows of all texts are generated together, by length."""
        ids = list(ids) if ids is not None else [str(i) for i in range(len(texts))]
        if len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts")
        tokens = [self._encode(t) for t in texts]
        results = [SummaryResult(id=i, summary="", num_tokens=len(t), levels=0) for i, t in zip(ids, tokens)]
        current = list(tokens)  # the input of the current level, per document
        # per document: the [start, end) token span of each previous-level summary in `current`
        part_spans: dict[int, list[tuple[int, int]]] = {}
        separator = self._encode("\n")
        active = list(range(len(texts)))
        level = 0
        bar = _progress(progress, desc="windows")
        while active:
            jobs: list[tuple[int, Window, list[int]]] = []
            for doc in active:
                ids_doc = current[doc]
                last_level = level >= self.max_levels
                if len(ids_doc) > self.window and (self.overflow == "truncate" or last_level):
                    if level > 0:
                        logger.warning(
                            "%s: the joined window summaries (%d tokens) still exceed the context after %d merge "
                            "levels: truncated to %d tokens",
                            results[doc].id,
                            len(ids_doc),
                            level,
                            self.window,
                        )
                    results[doc].truncated = True
                    spans = [(0, self.window)]
                else:
                    spans = window_spans(len(ids_doc), self.window, self.window_overlap)
                for index, (start, end) in enumerate(spans):
                    sources = [k for k, (a, b) in enumerate(part_spans.get(doc, [])) if a < end and b > start]
                    jobs.append((doc, Window(level, index, start, end, sources=sources), ids_doc[start:end]))
            if bar is not None:
                bar.total = (bar.total or 0) + len(jobs)
                bar.refresh()
            summaries = self.generate([ids_ for _, _, ids_ in jobs], progress=bar)
            by_doc: dict[int, list[Window]] = {}
            for (doc, window, _), summary in zip(jobs, summaries):
                window.summary = summary
                by_doc.setdefault(doc, []).append(window)
            next_active = []
            for doc, windows in by_doc.items():
                results[doc].windows.extend(windows)
                results[doc].levels = level + 1
                if len(windows) == 1:
                    results[doc].summary = windows[0].summary
                elif self.merge == "concatenate":
                    results[doc].summary = "\n".join(w.summary for w in windows)
                else:
                    # joined from the parts' own tokens, so every part's span is exact
                    joined: list[int] = []
                    part_spans[doc] = []
                    for k, window in enumerate(windows):
                        joined.extend(separator if k else [])
                        part = self._encode(window.summary)
                        part_spans[doc].append((len(joined), len(joined) + len(part)))
                        joined.extend(part)
                    current[doc] = joined
                    next_active.append(doc)
            active = next_active
            level += 1
        if bar is not None:
            bar.close()
        return results


def _progress(enabled: bool, desc: str, total: int | None = None, unit: str = "it") -> Any | None:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


# ----------------------------------------------------------------------------- reading files


class _TextExtractor(html.parser.HTMLParser):
    """Visible text of an HTML page: script/style/head dropped, block elements become line breaks."""

    _SKIP = {"script", "style", "head", "noscript", "template"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "blockquote", "pre", "table", "ul", "ol", "header", "footer", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML document (stdlib `html.parser`; one line per block element)."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.text()


def read_documents(paths: Sequence[str | Path], stdin: Any = None) -> Iterator[tuple[str, str]]:
    """Yield (id, text) for each document in `paths`.

    - .txt/.md/.markdown/.text: the file, id = its path;
    - .html/.htm: the visible text, id = its path;
    - .jsonl: one document per line with a "text" (or "document", "article") field; id = the
      line's "id" field if present, else "<path>:<line number>";
    - "-": all of stdin as one document, id "-".
    """
    for raw in paths:
        if str(raw) == STDIN:
            yield STDIN, (stdin or sys.stdin).read()
            continue
        path = Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"input {str(path)!r} does not exist (or is not a file)")
        suffix = path.suffix.lower()
        if suffix not in SUPPORTED_SUFFIXES:
            raise ValueError(
                f"cannot read {str(path)!r}: unsupported extension {suffix!r}; supported are "
                f"{', '.join(SUPPORTED_SUFFIXES)} (or '-' for stdin)"
            )
        content = path.read_text(encoding="utf-8", errors="replace")
        if suffix in HTML_SUFFIXES:
            yield str(path), html_to_text(content)
        elif suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(path, content)
        else:
            yield str(path), content


def _read_jsonl(path: Path, content: str) -> Iterator[tuple[str, str]]:
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number} is not valid JSON ({exc.msg})") from exc
        field_name = next((f for f in JSONL_TEXT_FIELDS if isinstance(row, dict) and f in row), None)
        if field_name is None:
            raise ValueError(f"{path}:{number} has no text field; expected one of {list(JSONL_TEXT_FIELDS)}")
        yield str(row.get("id", f"{path}:{number}")), str(row[field_name])


# ----------------------------------------------------------------------------- output jsonl


def finished_ids(output: Path) -> set[str]:
    """Ids of the complete records in `output`; a torn last line (a crash mid-write) is cut off."""
    if not output.is_file():
        return set()
    data = output.read_bytes()
    done: set[str] = set()
    good_end = 0
    for line in data.splitlines(keepends=True):
        try:
            record = json.loads(line)
            if not line.endswith(b"\n"):
                raise ValueError("no newline")
        except ValueError:
            break
        done.add(str(record["id"]))
        good_end += len(line)
    if good_end != len(data):
        logger.warning("%s: dropping an incomplete last record (%d bytes) before resuming", output, len(data) - good_end)
        with output.open("r+b") as fh:
            fh.truncate(good_end)
    return done


def _groups(items: list[tuple[str, str, int]], windows_per_group: int, window: int) -> Iterator[list[tuple[str, str, int]]]:
    """Consecutive documents (sorted by length) until their level-0 windows reach `windows_per_group`."""
    group: list[tuple[str, str, int]] = []
    count = 0
    for item in items:
        group.append(item)
        count += max(1, math.ceil(item[2] / window))
        if count >= windows_per_group:
            yield group
            group, count = [], 0
    if group:
        yield group


def summarize_files(
    summarizer: Summarizer,
    inputs: Sequence[str | Path],
    output: str | Path,
    *,
    skip_existing: bool = False,
    progress: bool = True,
    stdin: Any = None,
) -> dict[str, int]:
    """Summarise documents from files into `output` (jsonl, one record per document).

    Documents are processed in length-sorted groups of about `summarizer.batch_size` windows; each
    group's records are appended and flushed (and fsynced) as soon as it is done, so a crash loses at
    most the group in progress. With `skip_existing`, documents whose id is already in `output` are
    skipped; without it, an existing `output` is an error (nothing is overwritten silently).

    Returns:
        {"documents", "skipped", "written", "windowed"} counts.
    """
    output = Path(output)
    if output.exists() and not skip_existing and output.stat().st_size > 0:
        raise FileExistsError(
            f"output {str(output)!r} exists: pass skip_existing=True (--skip-existing) to resume it, or another path"
        )
    done = finished_ids(output) if skip_existing else set()
    documents = list(read_documents(inputs, stdin=stdin))
    seen: set[str] = set()
    for doc_id, _ in documents:
        if doc_id in seen:
            raise ValueError(f"document id {doc_id!r} appears twice in the inputs: ids must be unique")
        seen.add(doc_id)
    todo = [(i, t) for i, t in documents if i not in done]
    skipped = len(documents) - len(todo)
    if skipped:
        logger.info("skipping %d documents already in %s", skipped, output)
    lengths = [(i, t, len(summarizer._encode(t))) for i, t in todo]
    lengths.sort(key=lambda item: -item[2])
    output.parent.mkdir(parents=True, exist_ok=True)
    written = windowed = 0
    bar = _progress(progress, desc="documents", total=len(todo), unit="doc")
    start = time.perf_counter()
    with output.open("a", encoding="utf-8") as fh:
        for group in _groups(lengths, summarizer.batch_size, summarizer.window):
            results = summarizer.summarize([t for _, t, _ in group], ids=[i for i, _, _ in group])
            for result in results:
                fh.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
                windowed += result.levels > 1 or len(result.windows) > 1
            fh.flush()
            os.fsync(fh.fileno())
            written += len(results)
            if bar is not None:
                bar.update(len(results))
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start
    counts = {"documents": len(documents), "skipped": skipped, "written": written, "windowed": int(windowed)}
    speed = throughput(written, seconds)  # documents written by this run (skipped ones cost nothing)
    run = {**counts, **_precision(summarizer.model), "seconds": speed["seconds"],
           "documents_per_hour": speed["documents_per_hour"]}
    stats = stats_path(output)
    stats.write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    logger.info("summarised %s in %.1f s (%s documents/hour) -> %s, run statistics in %s",
                counts, seconds, run["documents_per_hour"], output, stats)
    return {**counts, "seconds": run["seconds"], "documents_per_hour": run["documents_per_hour"]}


def stats_path(output: str | Path) -> Path:
    """Where `summarize_files` writes the statistics of its last run: `summaries.jsonl` -> `summaries.stats.json`."""
    output = Path(output)
    return output.with_name(output.stem + ".stats.json")


# ----------------------------------------------------------------------------- loading


def inference_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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


# ----------------------------------------------------------------------------- evaluation


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
) -> dict[str, Any]:
    """Generate summaries for a dataset split and score them.

    Writes `<output_dir>/eval_results.json` (ROUGE-1/2/L/Lsum with bootstrap intervals, the sentence
    splitter's name, generated-length statistics, the settings) and `<output_dir>/predictions.jsonl`
    (id, prediction, reference, per-example ROUGE F-measures, windows). Documents longer than the
    context are truncated as in training (`overflow="truncate"`), or windowed ("windows"). The model
    runs in `dtype` ("fp32", "bf16", or "fp16" on CUDA); `throughput` reports documents per hour of
    the generation (loading and scoring not counted).

    Returns:
        The content of eval_results.json.
    """
    from mega2bart.data import load_summarization_dataset
    from mega2bart.metrics import SENTENCE_SPLITTER, length_stats, rouge_per_example, rouge_scores

    if limit is not None and limit < 1:
        raise ValueError(f"`limit` ({limit}) must be >= 1 or None (the whole split)")
    resolve_dtype(dtype, inference_device())  # fail before loading the dataset
    data, _ = load_summarization_dataset(
        dataset, dataset_config, text_column=text_column, summary_column=summary_column
    )
    if split not in data:
        raise ValueError(f"dataset {dataset!r} has no split {split!r}; its splits are {sorted(data)}")
    rows = data[split]
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    model, tokenizer = load_for_inference(model_dir, dtype)
    summarizer = Summarizer(
        model,
        tokenizer,
        max_input_tokens=max_input_tokens,
        batch_size=batch_size,
        generation=generation,
        overflow=overflow,
    )
    start = time.perf_counter()
    results = summarizer.summarize(rows["document"], ids=rows["id"], progress=progress)
    seconds = time.perf_counter() - start
    predictions = [r.summary for r in results]
    references = list(rows["summary"])
    scores = rouge_scores(predictions, references, bootstrap_samples=bootstrap_samples, seed=seed)
    per_example = rouge_per_example(predictions, references)
    report = {
        "model": str(model_dir),
        "dataset": dataset,
        "split": split,
        "num_examples": len(rows),
        "rouge": scores,
        "sentence_splitter": SENTENCE_SPLITTER,
        "generated_length": length_stats(predictions, tokenizer),
        "reference_length": length_stats(references, tokenizer),
        "inputs": {
            "max_input_tokens": summarizer.max_input_tokens,
            "overflow": overflow,
            "truncated_or_windowed": sum(1 for r in results if r.num_tokens > summarizer.window),
        },
        "generation": {**model.generation_config.to_diff_dict(), **(generation or GenerationOptions()).to_kwargs()},
        "throughput": {**_precision(model), **throughput(len(rows), seconds)},
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with (output_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
        for i, (result, reference) in enumerate(zip(results, references)):
            record = {
                "id": result.id,
                "prediction": result.summary,
                "reference": reference,
                "rouge": {name: round(float(values[i]) * 100, 4) for name, values in per_example.items()},
                "num_tokens": result.num_tokens,
                "windows": [w.to_dict() for w in result.windows] if len(result.windows) > 1 else [],
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    (output_dir / "eval_results.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    logger.info(
        "ROUGE-1/2/L/Lsum %.2f/%.2f/%.2f/%.2f on %d examples (%s documents/hour, %s) -> %s",
        *(scores[name]["mean"] for name in ("rouge1", "rouge2", "rougeL", "rougeLsum")),
        len(rows),
        report["throughput"]["documents_per_hour"],
        dtype,
        output_dir,
    )
    return report


__all__ = [
    "GenerationOptions",
    "SummaryResult",
    "Summarizer",
    "Window",
    "evaluate_model",
    "finished_ids",
    "html_to_text",
    "load_for_inference",
    "read_documents",
    "resolve_dtype",
    "stats_path",
    "summarize_files",
    "window_spans",
]
