"""The summaries jsonl: one record per document (`SummaryResult.to_dict`), appended group by group.

Reading one back is strict, so that resuming never drops a line of a file mega2bart did not write:
only a torn last line (a crash mid-write) is cut off (`scan_output`, `finished_ids`). The part files
of several processes (`mega2bart.summarize.parallel`) and of `mega2bart.evaluation` are the same format.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, TextIO

from .windows import SummaryResult, Window

logger = logging.getLogger("mega2bart.summarize")  # the package's logger: the name its messages have always had


SUMMARY_KEYS = tuple(f.name for f in dataclasses.fields(SummaryResult))
RECORD_START = b'{"id": '  # every record `summarize_files` writes starts so (json.dumps keeps the field order)


def summary_record(line: bytes) -> tuple[dict[str, Any] | None, str]:
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


def scan_output(output: Path) -> tuple[set[str], int, int]:
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
        record, why = summary_record(line)
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
                f"{summary_record(tail)[1]}); it was left untouched: pass another --output"
            )
    return done, good_end, len(data)


def _torn(fragment: bytes, done: set[str]) -> bool:
    """Whether the last line can be the remains of a record cut by a crash: a record without its
    newline, or bytes that are not JSON after other records, at the start of a record or zero-filled."""
    record, why = summary_record(fragment)
    if record is not None:
        return True
    if why != "not valid JSON":  # a whole JSON value, but not ours
        return False
    return bool(done) or RECORD_START.startswith(fragment[: len(RECORD_START)]) or not fragment.strip(b"\x00")


def finished_ids(output: str | Path) -> set[str]:
    """Ids of the complete records in `output`; a torn last line (a crash mid-write) is cut off.

    Raises:
        ValueError: `output` is not a summaries jsonl written by mega2bart, or a line before its
            last one is damaged (the file is not changed then).
    """
    output = Path(output)
    if not output.is_file():
        return set()
    done, good_end, size = scan_output(output)
    if good_end != size:
        logger.warning("%s: dropping an incomplete last record (%d bytes) before resuming", output, size - good_end)
        with output.open("r+b") as fh:
            fh.truncate(good_end)
    return done


def append_records(fh: TextIO, results: list[SummaryResult], *, fsync: bool) -> None:
    """Append one group's records (one json line each) and flush them, fsynced when `fsync` (a regular
    file: a pipe or terminal cannot be), so a crash loses at most the group in progress."""
    fh.write("".join(json.dumps(result.to_dict(), ensure_ascii=False) + "\n" for result in results))
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())


def complete_records(path: Path) -> list[bytes]:
    """The complete record lines of a summaries jsonl (a torn last line left out, the file unchanged)."""
    if not path.is_file():
        return []
    _, good_end, _ = scan_output(path)
    return path.read_bytes()[:good_end].split(b"\n")[:-1]


def record_ids(path: Path) -> set[str]:
    """Ids of the complete records of a summaries jsonl (none if it does not exist)."""
    return {str(json.loads(line)["id"]) for line in complete_records(path)}


def result_from_dict(record: dict[str, Any]) -> SummaryResult:
    """A `SummaryResult` back from its json record (keys other than its fields ignored)."""
    windows = [Window(**w) for w in record["windows"]]
    return SummaryResult(**{**{key: record[key] for key in SUMMARY_KEYS}, "windows": windows})


__all__ = [
    "RECORD_START",
    "SUMMARY_KEYS",
    "append_records",
    "complete_records",
    "finished_ids",
    "record_ids",
    "result_from_dict",
    "scan_output",
    "summary_record",
]
