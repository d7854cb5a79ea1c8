"""Long-document summarisation data: load, validate, tokenize, and collate.

Three steps, each usable alone:

1. `load_summarization_dataset(source)` -> (`DatasetDict` with columns "id"/"document"/"summary",
   `LoadStats`). `source` is a Hugging Face Hub name, local json/jsonl/csv/parquet file(s), or
   the built-in offline set "aclsum" (250 ACL papers from the PyPI package `aclsum==0.1.2`).
2. `tokenize_dataset(ds, tokenizer, max_source_length, max_target_length)` -> (tokenized data
   with input_ids/attention_mask/labels/length, per-split `TokenizationStats` with truncation
   counts and length percentiles).
3. `SummarizationCollator`: `DataCollatorForSeq2Seq` that collates only the model's columns
   (input_ids, attention_mask, token_type_ids, labels), pads labels with -100, and adds
   `decoder_input_ids` from `model.prepare_decoder_input_ids_from_labels` when a model is given
   (label smoothing needs them: transformers PR #9844). Inputs are padded to the longest in the
   batch (times `pad_to_multiple_of`); MEGA pads to a multiple of its `chunk_size` inside and
   slices its outputs back, so the collator need not know the chunk size.

Batches grouped by length: `Seq2SeqTrainingArguments(train_sampling_strategy="group_by_length")`
(transformers 5; the 4.x flag was `group_by_length=True`) makes the Trainer build a
`LengthGroupedSampler`. It reads the `length` column that `tokenize_dataset` adds (the
truncated input length) when `remove_unused_columns=False`; with the default
`remove_unused_columns=True` the Trainer drops that column first and the sampler measures
`len(input_ids)` of every row itself, which gives the same lengths, only slower on big sets.
`SummarizationCollator` ignores non-model columns, so `remove_unused_columns=False` is safe.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, DatasetDict, IterableDataset, load_dataset
from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerBase

from mega2bart.data_aclsum import aclsum_paper_to_example, load_aclsum  # noqa: F401  (aclsum_paper_to_example: kept importable here)
from mega2bart.tokenization import special_tokens_around

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_ID_COLUMNS = ("id", "doc_id", "article_id", "paper_id", "gem_id", "bid")
_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels")
ACLSUM_NAME = "aclsum"

# Hub name (lower case) -> (document column candidates, summary column candidates); the first
# candidate present in the data wins, so a renamed column in one revision still resolves.
KNOWN_COLUMNS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "scientific_papers": (("article",), ("abstract",)),  # configs "arxiv" and "pubmed"
    "armanc/scientific_papers": (("article",), ("abstract",)),
    "ccdv/arxiv-summarization": (("article",), ("abstract",)),
    "ccdv/pubmed-summarization": (("article",), ("abstract",)),
    "ccdv/govreport-summarization": (("report",), ("summary",)),
    "launch/gov_report": (("document", "report"), ("summary",)),
    "kmfoda/booksum": (("chapter",), ("summary_text",)),
    "billsum": (("text",), ("summary",)),
    "fiscalnote/billsum": (("text",), ("summary",)),
    "cnn_dailymail": (("article",), ("highlights",)),
    "abisee/cnn_dailymail": (("article",), ("highlights",)),
}
_DEFAULT_COLUMNS = (("document",), ("summary",))


@dataclass
class LoadStats:
    """What `load_summarization_dataset` read and what it dropped."""

    source: str
    text_column: str
    summary_column: str
    rows: dict[str, int] = field(default_factory=dict)
    """Rows kept per split."""
    dropped_empty: dict[str, int] = field(default_factory=dict)
    """Rows dropped per split because the document or the summary was empty or whitespace."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TokenizationStats:
    """Token counts of one split before truncation, and how many rows truncation cut."""

    num_examples: int
    max_source_length: int
    max_target_length: int
    inputs_truncated: int
    targets_truncated: int
    source_length_percentiles: dict[str, float]
    """Untruncated document length in tokens (specials included): mean, p50, p90, p95, p99, max."""
    target_length_percentiles: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- loading


def load_summarization_dataset(
    source: str | Path | Mapping[str, str | Path],
    config: str | None = None,
    *,
    text_column: str | None = None,
    summary_column: str | None = None,
    max_samples: int | None = None,
    cache_dir: str | None = None,
) -> tuple[DatasetDict, LoadStats]:
    """Load summarisation data as a `DatasetDict` with columns "id", "document", "summary".

    Args:
        source: one of
            - "aclsum": the offline ACL papers (full body text -> abstract), splits 100/50/100;
            - a local .json/.jsonl/.csv/.parquet file (loaded as split "train") or a mapping
              split -> file ("val"/"valid"/"dev" are renamed "validation");
            - a Hugging Face Hub name such as "ccdv/arxiv-summarization" (needs the network).
        config: the Hub configuration ("arxiv"/"pubmed" for "scientific_papers").
        text_column / summary_column: the source columns to use; the defaults come from
            `KNOWN_COLUMNS` for known Hub names, else "document"/"summary".
        max_samples: keep at most this many rows per split (after dropping empty ones).
        cache_dir: the `datasets` cache for Hub and local-file loading.

    Returns:
        The data and a `LoadStats`. Rows whose document or summary is empty or whitespace are
        dropped, counted per split and logged.

    Raises:
        ValueError: a column is missing (the message lists the columns present), an unknown
            file extension, mixed extensions, or a local file that is empty or unreadable (for
            .json/.jsonl the message names the first bad line).
        FileNotFoundError: a local file does not exist.
        RuntimeError: a Hub dataset could not be loaded (offline, wrong name, ...).
        ImportError: "aclsum" without the `aclsum` package.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"`max_samples` ({max_samples}) must be >= 1 or None (all rows)")

    if isinstance(source, str) and source.lower() == ACLSUM_NAME:
        raw, source_name = load_aclsum(), ACLSUM_NAME
        text_candidates, summary_candidates = ("document",), ("summary",)
    else:
        raw, source_name = _load_raw(source, config, cache_dir)
        text_candidates, summary_candidates = KNOWN_COLUMNS.get(source_name.lower(), _DEFAULT_COLUMNS)
    raw = DatasetDict({_SPLIT_ALIASES.get(name, name): split for name, split in raw.items()})

    columns = next(iter(raw.values())).column_names
    text_col = text_column or _first_present(text_candidates, columns)
    summary_col = summary_column or _first_present(summary_candidates, columns)
    stats = LoadStats(source=source_name, text_column=text_col, summary_column=summary_col)

    out = DatasetDict()
    for split_name, split in raw.items():
        roles = (("document", text_col, "text_column"), ("summary", summary_col, "summary_column"))
        for role, col, option in roles:
            if col not in split.column_names:
                raise ValueError(
                    f"{source_name!r} split {split_name!r} has no {role} column {col!r}; its columns are "
                    f"{split.column_names}: pass {option}=<one of them>"
                )
        id_col = next((c for c in _ID_COLUMNS if c in split.column_names), None)
        normalised = split.map(
            _normalise_batch,
            batched=True,
            with_indices=True,
            remove_columns=split.column_names,
            fn_kwargs={"text_col": text_col, "summary_col": summary_col, "id_col": id_col, "split": split_name},
            desc=f"select {text_col!r}/{summary_col!r} ({split_name})",
        )
        kept = normalised.filter(lambda row: bool(row["document"]) and bool(row["summary"]))
        dropped = len(normalised) - len(kept)
        if dropped:
            logger.warning(
                "%s/%s: dropped %d of %d rows with an empty document or summary",
                source_name,
                split_name,
                dropped,
                len(normalised),
            )
        if max_samples is not None and len(kept) > max_samples:
            kept = kept.select(range(max_samples))
        out[split_name] = kept
        stats.rows[split_name] = len(kept)
        stats.dropped_empty[split_name] = dropped

    logger.info(
        "Loaded %s (document=%r, summary=%r): rows %s, dropped empty %s",
        source_name,
        text_col,
        summary_col,
        stats.rows,
        stats.dropped_empty,
    )
    return out, stats


def require_rows(data: DatasetDict, split: str, stats: LoadStats | None, source: str | Path) -> None:
    """Raise ValueError, saying why, when `split` of `data` (from `load_summarization_dataset`) has no row."""
    if len(data[split]):
        return
    dropped = stats.dropped_empty.get(split, 0) if stats is not None else 0
    columns = f"document={stats.text_column!r}, summary={stats.summary_column!r}" if stats is not None else ""
    why = (
        f"all {dropped} of its rows have an empty document or summary ({columns}): check the file, or pass "
        "text_column=/summary_column= for the columns that hold the text"
        if dropped
        else "it is empty"
    )
    raise ValueError(f"dataset {str(source)!r} split {split!r} has no example left: {why}")


def _unsupported_file(source: str | Path) -> None:
    """A local file of a kind no loader reads is refused here, never looked up on the Hub under its path."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() not in _FILE_BUILDERS:
        kinds = ", ".join(sorted(_FILE_BUILDERS))
        raise ValueError(
            f"data file {str(path)!r} is a {path.suffix or 'suffix-less'} file; the supported kinds are {kinds} "
            f"(or the built-in offline set {ACLSUM_NAME!r}, or a Hub dataset name)"
        )


def load_summarization_stream(
    source: str | Path,
    config: str | None = None,
    *,
    split: str = "train",
    text_column: str | None = None,
    summary_column: str | None = None,
    cache_dir: str | None = None,
) -> IterableDataset:
    """One split as a `datasets.IterableDataset` read while training (`streaming=True`), for corpora
    that do not fit on disk: nothing is downloaded or converted whole.

    The sources and the columns ("id", "document", "summary") are those of
    `load_summarization_dataset`, but a local file is one split, "train". Rows whose document or
    summary is empty are skipped as they come (not counted: the stream's length is unknown).

    Raises:
        ValueError: a missing column, an unknown extension, a split the source lacks, an empty stream.
        FileNotFoundError: a local file does not exist.
        RuntimeError: a Hub dataset could not be opened.
    """
    if isinstance(source, str) and source.lower() == ACLSUM_NAME:
        data = load_aclsum()
        if split not in data:
            raise ValueError(f"{ACLSUM_NAME!r} has no split {split!r}; its splits are {sorted(data)}")
        raw, source_name, candidates = data[split].to_iterable_dataset(), ACLSUM_NAME, (("document",), ("summary",))
    elif Path(source).suffix.lower() in _FILE_BUILDERS:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"data file {str(path)!r} does not exist")
        if split != "train":
            raise ValueError(f"a single data file is the split 'train', not {split!r}: set train_split to 'train'")
        builder = _FILE_BUILDERS[path.suffix.lower()]
        raw = load_dataset(builder, data_files={"train": str(path)}, split="train", streaming=True, cache_dir=cache_dir)
        source_name, candidates = str(path), _DEFAULT_COLUMNS
    else:
        _unsupported_file(source)
        try:
            raw = load_dataset(str(source), config, split=split, streaming=True, cache_dir=cache_dir)
        except Exception as exc:  # network, auth, unknown name or split
            raise RuntimeError(
                f"could not open dataset {source!r} (config {config!r}, split {split!r}) as a stream from the "
                f"Hugging Face Hub: {type(exc).__name__}: {exc}"
            ) from exc
        source_name = str(source)
        candidates = KNOWN_COLUMNS.get(source_name.lower(), _DEFAULT_COLUMNS)
    columns = raw.column_names
    if columns is None:  # features unknown until the first row is read
        first = next(iter(raw.take(1)), None)
        if first is None:
            raise ValueError(f"{source_name!r} split {split!r} is empty: it needs one example per row")
        columns = list(first)
    text_col = text_column or _first_present(candidates[0], columns)
    summary_col = summary_column or _first_present(candidates[1], columns)
    for role, col, option in (("document", text_col, "text_column"), ("summary", summary_col, "summary_column")):
        if col not in columns:
            raise ValueError(
                f"{source_name!r} split {split!r} has no {role} column {col!r}; its columns are {columns}: "
                f"pass {option}=<one of them>"
            )
    id_col = next((c for c in _ID_COLUMNS if c in columns), None)
    normalised = raw.map(
        _normalise_batch,
        batched=True,
        with_indices=True,
        remove_columns=columns,
        fn_kwargs={"text_col": text_col, "summary_col": summary_col, "id_col": id_col, "split": split},
    )
    logger.info("streaming %s split %s (document=%r, summary=%r)", source_name, split, text_col, summary_col)
    return normalised.filter(lambda row: bool(row["document"]) and bool(row["summary"]))


def _first_present(candidates: tuple[str, ...], columns: list[str]) -> str:
    # None present: return the first candidate, so the missing-column error names it.
    return next((c for c in candidates if c in columns), candidates[0])


def _as_text(value: Any, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(v.strip() for v in value).strip()  # e.g. one summary sentence per item
    raise ValueError(f"column {column!r} holds {type(value).__name__} values; expected text (str)")


def _normalise_batch(
    batch: dict[str, list], indices: list[int], text_col: str, summary_col: str, id_col: str | None, split: str
) -> dict[str, list[str]]:
    ids = [str(i) for i in batch[id_col]] if id_col else [f"{split}-{i}" for i in indices]
    return {
        "id": ids,
        "document": [_as_text(v, text_col) for v in batch[text_col]],
        "summary": [_as_text(v, summary_col) for v in batch[summary_col]],
    }


def _load_raw(
    source: str | Path | Mapping[str, str | Path], config: str | None, cache_dir: str | None
) -> tuple[DatasetDict, str]:
    """Local file(s) by extension, else a Hub name; returns the data and a display name."""
    if isinstance(source, Mapping):
        files = {str(split): Path(path) for split, path in source.items()}
    elif Path(source).suffix.lower() in _FILE_BUILDERS:
        files = {"train": Path(source)}
    else:
        _unsupported_file(source)
        return _load_hub(str(source), config, cache_dir), str(source)

    for path in files.values():
        if not path.is_file():
            raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    builders = {_FILE_BUILDERS.get(p.suffix.lower()) for p in files.values()}
    if None in builders or len(builders) != 1:
        suffixes = sorted({p.suffix for p in files.values()})
        raise ValueError(
            f"data files must all be one of {sorted(_FILE_BUILDERS)} (json and jsonl may mix); got {suffixes}"
        )
    builder = builders.pop()
    for path in files.values():
        if _is_blank(path):
            raise ValueError(f"data file {str(path)!r} is empty: it needs one example per row")
    data_files = {split: str(path) for split, path in files.items()}
    try:
        data = load_dataset(builder, data_files=data_files, cache_dir=cache_dir)
    except Exception as exc:  # pyarrow/datasets errors: find the file and line ourselves
        problems = [_json_problem(path) for path in files.values()] if builder == "json" else []
        problem = next((p for p in problems if p), None)
        if problem is None:
            root = exc
            while root.__cause__ is not None or root.__context__ is not None:
                root = root.__cause__ or root.__context__
            detail = (str(root).strip().splitlines() or [""])[0]
            problem = f"could not read data file(s) {', '.join(data_files.values())}: {type(root).__name__}: {detail}"
        raise ValueError(problem) from exc
    return data, ", ".join(data_files.values())


def _is_blank(path: Path) -> bool:
    """True if the file holds nothing but whitespace (read until the first other byte)."""
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            if chunk.strip():
                return False
    return True


def _json_problem(path: Path) -> str | None:
    """The first reason a .json/.jsonl file is not rows of JSON objects, naming the line; None if none found."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"data file {str(path)!r} is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}): convert it"
    if text.lstrip().startswith("["):  # one JSON document: a list of rows
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"{path}:{exc.lineno} is not valid JSON ({exc.msg}, column {exc.colno})"
        bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
        return None if bad is None else f"{path}: item {bad} of the list is not a JSON object"
    for number, line in enumerate(text.splitlines(), start=1):  # JSON lines
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"{path}:{number} is not valid JSON ({exc.msg}, column {exc.colno}): one JSON object per line"
        if not isinstance(row, dict):
            return f"{path}:{number} is not a JSON object (a {type(row).__name__}): one JSON object per line"
    return None


def _load_hub(name: str, config: str | None, cache_dir: str | None) -> DatasetDict:
    try:
        data = load_dataset(name, config, cache_dir=cache_dir)
    except Exception as exc:  # network, auth, unknown name, missing config: all end here
        raise RuntimeError(
            f"could not load dataset {name!r} (config {config!r}) from the Hugging Face Hub: "
            f"{type(exc).__name__}: {exc}. Offline? Set HF_HUB_OFFLINE=1 to fail fast, and use a local "
            f".json/.jsonl/.csv/.parquet file or the built-in offline set {ACLSUM_NAME!r} instead"
        ) from exc
    if not isinstance(data, DatasetDict):
        raise RuntimeError(f"dataset {name!r} loaded as {type(data).__name__}, expected splits (DatasetDict)")
    return data


# ----------------------------------------------------------------------------- tokenizing


def _truncate(ids: list[int], max_length: int, lead: int, trail: int) -> list[int]:
    """Keep the leading/trailing specials and the first `max_length - lead - trail` text tokens,
    which is what `truncation=True` does to a single right-padded sequence."""
    if len(ids) <= max_length:
        return ids
    keep = max_length - lead - trail
    return ids[: lead + keep] + ids[len(ids) - trail :]


def _percentiles(lengths: np.ndarray) -> dict[str, float]:
    if lengths.size == 0:
        return {}
    p50, p90, p95, p99 = np.percentile(lengths, [50, 90, 95, 99])
    values = {"mean": lengths.mean(), "p50": p50, "p90": p90, "p95": p95, "p99": p99, "max": lengths.max()}
    return {name: round(float(value), 1) for name, value in values.items()}


def tokenize_dataset(
    ds: DatasetDict | Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    max_source_length: int,
    max_target_length: int,
    *,
    text_column: str = "document",
    summary_column: str = "summary",
    num_proc: int | None = None,
) -> tuple[DatasetDict | Dataset, dict[str, TokenizationStats]]:
    """Tokenize documents into input_ids/attention_mask, summaries into labels, add `length`.

    Each text is tokenized once in full (so the statistics count the true length) and then cut
    to the limit, keeping the closing `</s>`. Text columns are kept (the Trainer and
    `SummarizationCollator` ignore them; evaluation may want the reference text). An
    `IterableDataset` (a stream) is tokenized lazily, as it is read, and gets no statistics.

    Returns:
        The tokenized data (same type as `ds`) and `TokenizationStats` per split ("train", ...;
        a lone `Dataset` is reported under its split name, or "dataset"). The stats are logged.
    """
    specials = special_tokens_around(tokenizer)
    lead, trail = len(specials.lead), len(specials.trail)
    for name, value in (("max_source_length", max_source_length), ("max_target_length", max_target_length)):
        if value <= lead + trail:
            raise ValueError(f"`{name}` ({value}) must exceed the {lead + trail} special tokens the tokenizer adds")
    if max_source_length > tokenizer.model_max_length:
        logger.warning(
            "max_source_length (%d) exceeds tokenizer.model_max_length (%d): make sure the encoder "
            "has positions for it",
            max_source_length,
            tokenizer.model_max_length,
        )

    def encode(batch: dict[str, list[str]]) -> dict[str, list]:
        # Full length first (truncation=False), cut afterwards: one tokenizer pass per text.
        sources = tokenizer(batch[text_column], truncation=False)["input_ids"]
        targets = tokenizer(text_target=batch[summary_column], truncation=False)["input_ids"]
        input_ids = [_truncate(ids, max_source_length, lead, trail) for ids in sources]
        labels = [_truncate(ids, max_target_length, lead, trail) for ids in targets]
        return {
            "input_ids": input_ids,
            "attention_mask": [[1] * len(ids) for ids in input_ids],
            "labels": labels,
            "length": [len(ids) for ids in input_ids],
            "_source_tokens": [len(ids) for ids in sources],
            "_target_tokens": [len(ids) for ids in targets],
        }

    is_dict = isinstance(ds, DatasetDict)
    splits = ds if is_dict else {str(ds.split) if ds.split is not None else "dataset": ds}
    out: dict[str, Dataset] = {}
    stats: dict[str, TokenizationStats] = {}
    for split_name, split in splits.items():
        if isinstance(split, IterableDataset):  # a stream: tokenized as it is read, no statistics
            out[split_name] = split.map(encode, batched=True).remove_columns(["_source_tokens", "_target_tokens"])
            logger.info("%s: a stream, tokenized while training (no length statistics)", split_name)
            continue
        for col in (text_column, summary_column):
            if col not in split.column_names:
                raise ValueError(
                    f"split {split_name!r} has no column {col!r}; its columns are {split.column_names}: "
                    "pass text_column=/summary_column= or load with load_summarization_dataset"
                )
        tokenized = split.map(encode, batched=True, num_proc=num_proc, desc=f"tokenize ({split_name})")
        source_tokens = np.asarray(tokenized["_source_tokens"], dtype=np.int64)
        target_tokens = np.asarray(tokenized["_target_tokens"], dtype=np.int64)
        stats[split_name] = TokenizationStats(
            num_examples=len(tokenized),
            max_source_length=max_source_length,
            max_target_length=max_target_length,
            inputs_truncated=int((source_tokens > max_source_length).sum()),
            targets_truncated=int((target_tokens > max_target_length).sum()),
            source_length_percentiles=_percentiles(source_tokens),
            target_length_percentiles=_percentiles(target_tokens),
        )
        out[split_name] = tokenized.remove_columns(["_source_tokens", "_target_tokens"])
        s = stats[split_name]
        logger.info(
            "%s: %d examples; inputs truncated %d (max_source_length=%d, tokens p50 %.0f p95 %.0f max %.0f); "
            "targets truncated %d (max_target_length=%d, tokens p50 %.0f p95 %.0f max %.0f)",
            split_name,
            s.num_examples,
            s.inputs_truncated,
            max_source_length,
            s.source_length_percentiles.get("p50", 0),
            s.source_length_percentiles.get("p95", 0),
            s.source_length_percentiles.get("max", 0),
            s.targets_truncated,
            max_target_length,
            s.target_length_percentiles.get("p50", 0),
            s.target_length_percentiles.get("p95", 0),
            s.target_length_percentiles.get("max", 0),
        )
    result = DatasetDict(out) if is_dict else next(iter(out.values()))
    return result, stats


# ----------------------------------------------------------------------------- collating


@dataclass
class SummarizationCollator(DataCollatorForSeq2Seq):
    """`DataCollatorForSeq2Seq` for rows that carry more than the model's columns.

    Its one job beyond the parent's: rows may hold extra columns (id, document, summary, the
    `length` that the length-grouped sampler reads when `remove_unused_columns=False`); only
    input_ids, attention_mask, token_type_ids and labels are collated (the parent would try to
    pad the text columns into tensors). It also refuses a left-padding tokenizer, which would put
    the labels' -100 padding before the summary.

    Padding is the parent's: inputs with the pad id and labels with `label_pad_token_id` (-100),
    both to the longest row rounded up to `pad_to_multiple_of` (None: no rounding). A MEGA
    encoder needs no chunk-sized padding here: `MegaModel` pads inputs to a multiple of its
    `chunk_size` itself (pad id, mask 0) and slices its outputs back, which gives the same
    encoder states at the real positions. With `model` (EncoderDecoderModel and BART have
    `prepare_decoder_input_ids_from_labels`), `decoder_input_ids` are added, as label smoothing needs.
    """

    def __post_init__(self) -> None:
        value = self.pad_to_multiple_of
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"`pad_to_multiple_of` ({value!r}) must be a positive int or None")
        if self.tokenizer.padding_side != "right":
            raise ValueError(
                f"tokenizer.padding_side is {self.tokenizer.padding_side!r}; seq2seq inputs and labels must be "
                "right-padded: set tokenizer.padding_side = 'right'"
            )

    def __call__(self, features: list[dict[str, Any]], return_tensors: str | None = None) -> dict[str, Any]:
        features = [{k: f[k] for k in _MODEL_KEYS if k in f} for f in features]
        return super().__call__(features, return_tensors=return_tensors)
