"""The text of a pretraining run: documents read from files, a dataset or a built-in corpus, packed
into sequences of `<s>` + (max_length - 1) tokens (`mega2bart.pretraining` describes the rules).

`load_documents` and `pack_documents` read and pack everything up front; `iter_documents` and
`PackedStream` do the same one document at a time (`PretrainConfig.streaming`).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.utils.data

from mega2bart.documents import DocumentError, document_files, read_documents

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .config import PretrainConfig

logger = logging.getLogger(__name__)

BUILTIN_DATASETS = ("aclsum", "gensim-wiki")
GENSIM_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def load_documents(config: PretrainConfig) -> list[str]:
    """All documents named by `config` (files first, then the dataset), empty ones dropped."""
    refused: list[DocumentError] = []
    documents = list(_file_documents(config, refused))
    if config.dataset:
        documents.extend(_dataset_documents(config))
    documents = [doc for doc in documents if doc.strip()]
    if config.max_documents is not None:
        documents = documents[: config.max_documents]
    if not documents:
        first = f" (text_files: {len(refused)} refused, first: {refused[0]})" if refused else ""
        raise ValueError(f"the text sources hold no non-empty document{first}: check `text_files`/`dataset`")
    logger.info("read %d documents (%d characters)", len(documents), sum(map(len, documents)))
    return documents


def _file_documents(config: PretrainConfig, refused: list[DocumentError]) -> Iterator[str]:
    """The texts of `config.text_files` (directories expanded), read by `mega2bart.documents`, one file
    (or .jsonl line) at a time; .jsonl lines hold the text in `config.text_column`.

    Documents that cannot be used (empty or whitespace, a null or non-string field, not UTF-8) are
    skipped (added to `refused`), each logged at debug level and counted in one warning once the files are read."""
    files = document_files(config.text_files)
    hint = "pass text_column"
    for _, text in read_documents(files, refused=refused, text_fields=(config.text_column,), field_hint=hint):
        yield text
    for error in refused:
        logger.debug("skipped %s", error)
    if refused:
        logger.warning("skipped %d documents of text_files without usable text (first: %s)", len(refused), refused[0])


_DATA_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _dataset_documents(config: PretrainConfig) -> Iterator[str] | list[str]:
    """The texts of `config.dataset`: a list, or with `config.streaming` an iterator over a stream."""
    name = config.dataset
    if name.lower() == "aclsum":
        from mega2bart.data import load_summarization_dataset

        data, _ = load_summarization_dataset("aclsum")
        if config.dataset_split not in data:
            raise ValueError(f"aclsum has splits {sorted(data)}, not {config.dataset_split!r}: set dataset_split")
        return list(data[config.dataset_split]["document"])
    if name.lower() == "gensim-wiki":
        return _gensim_wiki_documents()
    import datasets

    suffix = Path(name).suffix.lower()
    try:
        if suffix in _DATA_FILE_BUILDERS:
            if not Path(name).is_file():
                raise FileNotFoundError(f"data file {name!r} does not exist")
            rows = datasets.load_dataset(
                _DATA_FILE_BUILDERS[suffix], data_files=name, split="train", streaming=config.streaming
            )
        else:
            rows = datasets.load_dataset(
                name, config.dataset_config, split=config.dataset_split, streaming=config.streaming
            )
    except FileNotFoundError:
        raise
    except Exception as exc:  # offline, unknown name, bad split: datasets raises many types
        raise RuntimeError(
            f"could not load dataset {name!r} (config {config.dataset_config!r}, split {config.dataset_split!r}): "
            f"{type(exc).__name__}: {exc}. Offline, use text_files or the built-ins {BUILTIN_DATASETS}"
        ) from exc
    if not config.streaming:
        if config.text_column not in rows.column_names:
            raise ValueError(
                f"dataset {name!r} has no column {config.text_column!r} (columns: {rows.column_names}): pass text_column"
            )
        return list(rows[config.text_column])
    return _stream_column(rows, name, config.text_column)


def _stream_column(rows: Any, name: str, column: str) -> Iterator[str]:
    for row in rows:
        if column not in row:
            raise ValueError(f"dataset {name!r} has no column {column!r} (columns: {sorted(row)}): pass text_column")
        yield "" if row[column] is None else str(row[column])


def iter_documents(config: PretrainConfig) -> Iterator[str]:
    """The documents of `load_documents`, in the same order, read one at a time (for streaming)."""
    sources = itertools.chain(_file_documents(config, []), _dataset_documents(config) if config.dataset else ())
    documents = (doc for doc in sources if doc.strip())
    return itertools.islice(documents, config.max_documents)


class PackedStream(torch.utils.data.IterableDataset):
    """`pack_documents` over `iter_documents(config)`, as it reads: {"input_ids": <s> + max_length - 1
    tokens} per sequence, the tail dropped. Each iteration reads the text again from the start."""

    def __init__(self, config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, max_length: int) -> None:
        self.config, self.tokenizer, self.max_length = config, tokenizer, max_length

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        body = self.max_length - 1
        buffer: list[int] = []
        for document in iter_documents(self.config):
            buffer.extend(self.tokenizer(document, add_special_tokens=False, verbose=False)["input_ids"])
            buffer.append(eos)
            while len(buffer) >= body:
                yield {"input_ids": [bos, *buffer[:body]]}
                del buffer[:body]


def _gensim_wiki_documents() -> list[str]:
    """Article texts of the shortened English Wikipedia dump in the gensim wheel (107 articles)."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the built-in text 'gensim-wiki' is the Wikipedia sample in the gensim wheel: pip install gensim==4.4.0"
        )
    dump = Path(next(iter(spec.submodule_search_locations))) / "test" / "test_data" / GENSIM_WIKI_FILE
    if not dump.is_file():
        raise FileNotFoundError(f"{dump} is missing from this gensim installation: pip install gensim==4.4.0")
    import bz2

    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    with bz2.open(dump, "rt", encoding="utf-8") as handle:
        return [filter_wiki(text) for _title, text, _page in extract_pages(handle, filter_namespaces=("0",))]


def pack_documents(token_docs: list[list[int]], max_length: int, bos_id: int, eos_id: int) -> list[list[int]]:
    """Join documents with `</s>` and cut the stream into `<s>` + (max_length - 1) tokens; drop the tail."""
    import numpy as np

    pieces = [np.asarray(ids + [eos_id], dtype=np.int64) for ids in token_docs]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    body = max_length - 1
    count = len(stream) // body
    if count == 0:
        raise ValueError(
            f"the text has {len(stream)} tokens, fewer than one packed sequence of max_length {max_length}: "
            "add text or lower max_length"
        )
    rows = stream[: count * body].reshape(count, body)  # (sequences, max_length - 1)
    rows = np.concatenate([np.full((count, 1), bos_id, dtype=np.int64), rows], axis=1)  # (sequences, max_length)
    return rows.tolist()
