"""A summary record (`SummaryResult.to_dict`, what `mega2bart summarize` writes) as the page shows it and as its
Markdown download: the windows of the document (level 0) and the summary-of-summaries levels above them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WINDOW_HEADERS = ["window", "tokens", "summary"]
LEVEL_HEADERS = ["level", "window", "tokens of the joined summaries", "from windows below", "summary"]


def pages_of(window: dict[str, Any]) -> str:
    """The pages a window came from, when its record has them ("3", "3-5"); "" otherwise."""
    pages = window.get("pages")
    if not pages:
        return ""
    if isinstance(pages, list | tuple):
        first, last = pages[0], pages[-1]
        return str(first) if first == last else f"{first}-{last}"
    return str(pages)


def window_table(record: dict[str, Any]) -> dict[str, list[Any]]:
    """The document's windows (level 0): index, token span, pages (a column only when the record has pages) and
    each window's summary; as {"headers", "data"}."""
    rows = [
        [w["index"], f"{w['token_start']}-{w['token_end']}", pages_of(w), w["summary"]]
        for w in record["windows"]
        if w["level"] == 0
    ]
    return _with_pages(WINDOW_HEADERS, rows)


def level_table(record: dict[str, Any]) -> dict[str, list[Any]]:
    """The summary-of-summaries levels (level >= 1), each window with the windows of the level below it covers
    (and their pages, when the record has pages)."""
    rows = [
        [
            w["level"],
            w["index"],
            f"{w['token_start']}-{w['token_end']}",
            _indices(w["sources"]),
            pages_of(w),
            w["summary"],
        ]
        for w in record["windows"]
        if w["level"] >= 1
    ]
    return _with_pages(LEVEL_HEADERS, rows)


def _with_pages(headers: list[str], rows: list[list[Any]]) -> dict[str, list[Any]]:
    """{"headers", "data"} of `rows`, whose next-to-last cell is the pages: a "pages" column before the summary when
    a row has pages, none otherwise."""
    if any(row[-2] for row in rows):
        return {"headers": [*headers[:-1], "pages", headers[-1]], "data": rows}
    return {"headers": headers, "data": [[*row[:-2], row[-1]] for row in rows]}


def record_markdown(record: dict[str, Any], settings: dict[str, Any]) -> str:
    """The Markdown download: the summary, then every level's table (the windows of the document first)."""
    windows = window_table(record)
    levels = level_table(record)
    used = ", ".join(f"{key} {value}" for key, value in settings.items() if value is not None)
    lines = [
        f"# Summary of {record['id']}",
        "",
        record["summary"],
        "",
        f"{record['num_tokens']:,} tokens, {len(windows['data'])} window(s), {record['levels']} level(s)"
        + (", the last one truncated to the context" if record.get("truncated") else "")
        + (f"; generation: {used}" if used else ""),
        "",
        "## Windows of the document (level 0)",
        "",
        *_markdown_table(windows),
    ]
    if levels["data"]:
        lines += ["", "## Summary of summaries", "", *_markdown_table(levels)]
    return "\n".join(lines) + "\n"


def _indices(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _markdown_table(table: dict[str, list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return " ".join(str(value).split()).replace("|", "\\|")

    headers = table["headers"]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in table["data"]),
    ]


__all__ = ["LEVEL_HEADERS", "WINDOW_HEADERS", "level_table", "pages_of", "record_markdown", "window_table"]
