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
    windows = [w for w in record["windows"] if w["level"] == 0]
    with_pages = any(pages_of(w) for w in windows)
    headers = [*WINDOW_HEADERS[:2], "pages", WINDOW_HEADERS[2]] if with_pages else WINDOW_HEADERS
    rows = []
    for w in windows:
        row = [w["index"], f"{w['token_start']}-{w['token_end']}", w["summary"]]
        rows.append([*row[:2], pages_of(w), row[2]] if with_pages else row)
    return {"headers": headers, "data": rows}


def level_table(record: dict[str, Any]) -> dict[str, list[Any]]:
    """The summary-of-summaries levels (level >= 1), each window with the windows of the level below it covers."""
    rows = [
        [w["level"], w["index"], f"{w['token_start']}-{w['token_end']}", _indices(w["sources"]), w["summary"]]
        for w in record["windows"]
        if w["level"] >= 1
    ]
    return {"headers": LEVEL_HEADERS, "data": rows}


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
