"""The unit of work of `summarize_files`, of several processes and of `mega2bart.evaluation`: documents
longest first, in groups of about `batch_size` generation inputs, each group summarised in one go and
its records appended as soon as it is done."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TextIO

from mega2bart.documents import Document

from .records import append_records
from .summarizer import Summarizer
from .windows import SummaryResult


class Pending(NamedTuple):
    """A document to summarise and the length in tokens by which work is grouped and shared."""

    id: str
    text: str
    num_tokens: int
    page_starts: tuple[int, ...] = ()
    """Where each page starts in `text` (`Document.page_starts`); () without pages."""


def longest_first(
    summarizer: Summarizer, documents: Sequence[tuple[str, str] | Document], cap: int | None = None
) -> list[Pending]:
    """`documents` ((id, text) pairs or `Document`s) with their token counts (at most `cap`), longest first,
    input order on ties."""
    pending = [
        Pending(doc[0], doc[1], len(summarizer._encode(doc[1])), tuple(doc[2]) if len(doc) > 2 else ())
        for doc in documents
    ]
    if cap is not None:
        pending = [doc._replace(num_tokens=min(doc.num_tokens, cap)) for doc in pending]
    return sorted(pending, key=lambda doc: -doc.num_tokens)


def length_groups(documents: list[Pending], windows_per_group: int, window: int | None) -> Iterator[list[Pending]]:
    """Consecutive documents (sorted by length) until their level-0 windows reach `windows_per_group`
    (`window` None: one generation input per document, as with `overflow="truncate"`)."""
    group: list[Pending] = []
    count = 0
    for doc in documents:
        group.append(doc)
        count += 1 if window is None else max(1, math.ceil(doc.num_tokens / window))
        if count >= windows_per_group:
            yield group
            group, count = [], 0
    if group:
        yield group


def summarized(
    summarizer: Summarizer, groups: Iterable[list[Pending]], bar: Any | None
) -> Iterator[list[SummaryResult]]:
    """The results of each group in turn (the progress bar advanced once the caller has used them)."""
    for group in groups:
        results = summarizer.summarize(
            [doc.text for doc in group], ids=[doc.id for doc in group], page_starts=[doc.page_starts for doc in group]
        )
        yield results
        if bar is not None:
            bar.update(len(results))


def was_windowed(result: SummaryResult) -> bool:
    """Whether the document went through windows (did not fit the context in one pass)."""
    return result.levels > 1 or len(result.windows) > 1


def write_groups(
    summarizer: Summarizer, groups: Iterable[list[Pending]], fh: TextIO, *, fsync: bool, bar: Any | None
) -> tuple[int, int]:
    """Summarise `groups` into `fh` group by group (`append_records`); returns (written, windowed)."""
    written = windowed = 0
    for results in summarized(summarizer, groups, bar):
        append_records(fh, results, fsync=fsync)
        written += len(results)
        windowed += sum(map(was_windowed, results))
    return written, windowed


__all__ = ["Pending", "length_groups", "longest_first", "summarized", "was_windowed", "write_groups"]
