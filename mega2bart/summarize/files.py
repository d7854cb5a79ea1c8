"""`summarize_files`: documents from files into a summaries jsonl, resumable (`skip_existing`), never
over something mega2bart did not write (`check_output`), with the run's statistics beside it (`stats_path`)."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mega2bart.documents import STDIN, Document, DocumentError, load_documents

from .groups import length_groups, longest_first, write_groups
from .loading import model_precision, throughput
from .parallel import check_parts, parts_dir, remove_parts, summarize_in_parts, world
from .records import RECORD_START, finished_ids, scan_output, summary_record
from .summarizer import Summarizer, progress_bar

logger = logging.getLogger("mega2bart.summarize")  # the package's logger: the name its messages have always had


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
    check_parts(parts_dir(output), skip_existing=skip_existing, overwrite=overwrite)
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
        scan_output(output)
    elif overwrite:
        with output.open("rb") as fh:
            first = fh.readline()
        record, why = summary_record(first)
        if record is None and not (first.startswith(RECORD_START) and not first.endswith(b"\n")):
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


def _read_inputs(inputs: Sequence[str | Path], stdin: Any) -> tuple[list[Document], list[DocumentError]]:
    """The documents of `inputs` and those refused (each logged as a warning).

    Raises:
        ValueError: no document is left, or an id appears twice.
    """
    refused: list[DocumentError] = []
    documents = list(load_documents(inputs, stdin=stdin, refused=refused))
    if len(refused) == 1 and not documents:
        raise ValueError(f"{refused[0]}: nothing to summarise")
    for error in refused:
        logger.warning("skipped %s", error)
    if refused and not documents:
        raise ValueError(f"all {len(refused)} documents were refused (first: {refused[0]}): nothing to summarise")
    seen: set[str] = set()
    for doc_id, *_ in documents:
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
    Documents that cannot be summarised (see `mega2bart.documents.load_documents`) are skipped with
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
    parts = parts_dir(output)
    rank, world_size = world()
    if world_size > 1 or (parts.exists() and skip_existing):
        start = time.perf_counter()
        counts = summarize_in_parts(summarizer, documents, output, overwrite=overwrite, progress=progress)
        counts = {"documents": len(documents) + len(refused), **counts, "refused": len(refused)}
        return _report_run(summarizer, output, counts, time.perf_counter() - start, write_stats=rank == 0)
    if overwrite and parts.is_dir():  # the unmerged parts of an earlier run under several processes
        remove_parts(parts)
    done = finished_ids(output) if skip_existing else set()
    todo = [doc for doc in documents if doc.id not in done]
    skipped = len(documents) - len(todo)
    if skipped:
        logger.info("skipping %d documents already in %s", skipped, output)
    groups = length_groups(longest_first(summarizer, todo), summarizer.batch_size, summarizer.window)
    output.parent.mkdir(parents=True, exist_ok=True)
    bar = progress_bar(progress, desc="documents", total=len(todo), unit="doc")
    start = time.perf_counter()
    try:
        with output.open("w" if overwrite else "a", encoding="utf-8") as fh:
            regular = stat.S_ISREG(os.fstat(fh.fileno()).st_mode)  # a pipe or terminal cannot be fsynced
            written, windowed = write_groups(summarizer, groups, fh, fsync=regular, bar=bar)
    finally:  # a failure (a full disk...) is then reported on a line of its own
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
    run = {**counts, **model_precision(summarizer.model), **timing}
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


__all__ = ["check_output", "stats_path", "summarize_files"]
