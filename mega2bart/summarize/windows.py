"""What a summary is made of: the `Window`s of each level (a token span and the partial summary it
produced), a document's `SummaryResult`, and `window_spans`, the overlapping spans of a long input."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any


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
    pages: list[int] = field(default_factory=list)
    """[first, last] page (1-based, both included) of a paged document (a PDF) that the span comes from: at
    level 0 the pages of its first and last token, at level >= 1 those of its sources; [] without pages."""

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


__all__ = ["SummaryResult", "Window", "window_spans"]
