"""Summarising under several processes (`torchrun`/`accelerate launch`, WORLD_SIZE > 1).

The groups of documents are shared between the processes (longest first, each to the least loaded:
`assign`), each process appends its records to its own part file beside the output, and the first
process merges the parts into the output in the order a single process writes (`summarize_in_parts`).
`mega2bart.evaluation` shares the examples of a split the same way, with the same helpers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from mega2bart.documents import Document

from .groups import Pending, length_groups, longest_first, was_windowed, write_groups
from .records import complete_records, finished_ids, record_ids, result_from_dict, scan_output
from .summarizer import Summarizer, progress_bar
from .windows import SummaryResult

logger = logging.getLogger("mega2bart.summarize")  # the package's logger: the name its messages have always had

PARTS_SUFFIX = ".parts"
"""`<output>.parts/`: the part files of a run under several processes, until they are merged."""
# every process waits at the end for the slowest one; a process that dies is noticed by the launcher
# (torchrun stops the others), so the wait is bounded by the work, not by this timeout
_BARRIER_TIMEOUT = timedelta(hours=24)


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun and accelerate launch set them; (0, 1) for a plain run."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + PARTS_SUFFIX)


def part_file(parts: Path, rank: int, world_size: int) -> Path:
    return parts / f"part-{rank:05d}-of-{world_size:05d}.jsonl"


@contextmanager
def process_barrier() -> Iterator[Any]:
    """A function that waits for every process; joins a gloo group first if none is set up yet
    (gloo works beside CUDA too: the barrier only exchanges a CPU tensor)."""
    _, world_size = world()
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


def remove_parts(parts: Path) -> None:
    """Delete the part files in `parts`, then the folder if nothing else is in it."""
    for path in parts.glob("part-*.jsonl"):
        path.unlink()
    try:
        parts.rmdir()
    except OSError:
        logger.warning("left %s in place: it holds files mega2bart did not write", parts)


def check_parts(parts: Path, *, skip_existing: bool, overwrite: bool) -> None:
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
        scan_output(path)  # a foreign or damaged part raises; nothing is changed


def assign(groups: list[list[Pending]], world_size: int) -> list[int]:
    """The process of each group: in order (longest first), each to the process with the fewest tokens
    so far, the lowest rank on ties. Deterministic, so every process computes the same plan."""
    load = [0] * world_size
    owners = []
    for group in groups:
        rank = min(range(world_size), key=lambda r: (load[r], r))
        owners.append(rank)
        load[rank] += sum(max(1, doc.num_tokens) for doc in group)
    return owners


def owned_groups(groups: list[list[Pending]], rank: int, world_size: int) -> list[list[Pending]]:
    """The groups `assign` gives to process `rank`."""
    return [group for group, owner in zip(groups, assign(groups, world_size), strict=True) if owner == rank]


def summarize_in_parts(
    summarizer: Summarizer,
    documents: Sequence[tuple[str, str] | Document],
    output: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Summarise `documents` ((id, text) pairs or `Document`s; unique ids) with every process of the job
    into `output`, resuming.

    1. With `overwrite`, the first process removes the parts and empties `output`; each process
       cuts a torn last line off its own part file (`<output>.parts/part-RANK-of-WORLD.jsonl`).
    2. Documents already in `output` (unless `overwrite`) or in any part file (of this run or of one
       with another number of processes) are done; the rest are grouped as a single process groups
       them, and the groups are shared by `assign`.
    3. Each process appends each group's records to its part file (`write_groups`, as a single
       process appends to the output: flushed and fsynced per group), so a crash loses only the
       groups in progress.
    4. The first process writes the output's earlier records, then the parts' records in the order
       a single process writes them (longest document first, input order on ties) to a temporary
       file, fsyncs it, renames it onto `output` and removes the parts.

    Returns:
        {"skipped", "written", "windowed"}: "written" and "windowed" count the records this run
        added, of all processes on the first one and its own elsewhere.
    """
    rank, world_size = world()
    parts = parts_dir(output)
    if output.exists() and not output.is_file():
        raise ValueError(
            f"output {str(output)!r} is not a regular file: runs under several processes (or resuming their "
            "parts) merge into a file; pass a file path as --output"
        )
    mine = part_file(parts, rank, world_size)
    with process_barrier() as barrier:
        if rank == 0:
            if overwrite and parts.is_dir():
                remove_parts(parts)
            if overwrite and output.is_file():  # emptied now, as one process does: a crash cannot revive it
                output.open("w").close()
            parts.mkdir(parents=True, exist_ok=True)
        barrier()
        finished_ids(mine)  # only its owner changes a part file
        barrier()
        earlier = set() if overwrite else record_ids(output)
        done = earlier.union(*(record_ids(path) for path in sorted(parts.glob("part-*.jsonl"))))
        barrier()  # everyone has read the same state before anyone writes
        todo = [doc for doc in documents if doc[0] not in done]
        groups = list(length_groups(longest_first(summarizer, todo), summarizer.batch_size, summarizer.window))
        owned = owned_groups(groups, rank, world_size)
        logger.info(
            "process %d of %d: %d of %d groups (%d documents; %d already done)",
            rank, world_size, len(owned), len(groups), sum(map(len, owned)), len(documents) - len(todo),
        )  # fmt: skip
        bar = progress_bar(progress and rank == 0, desc="documents (process 0)", total=sum(map(len, owned)), unit="doc")
        with mine.open("a", encoding="utf-8") as fh:
            written, windowed = write_groups(summarizer, owned, fh, fsync=True, bar=bar)
        if bar is not None:
            bar.close()
        barrier()
        if rank == 0:
            position = {doc[0]: index for index, doc in enumerate(documents)}
            added = _merge_parts(output, parts, position, keep_output=not overwrite)
            # of all processes: the merged records less those finished before this run (in the parts of an
            # interrupted one)
            new = [record for record in added if str(record.id) not in done]
            written, windowed = len(new), sum(map(was_windowed, new))
        barrier()  # the output is complete when any process returns
    return {"skipped": len(documents) - len(todo), "written": written, "windowed": windowed}


def _merge_parts(output: Path, parts: Path, position: dict[str, int], *, keep_output: bool) -> list[SummaryResult]:
    """Write `output` = its complete records (if `keep_output`) + the parts' other records in the order of
    a single process; atomically (a temporary file renamed onto it); remove `parts`. Returns the records added."""
    kept = complete_records(output) if keep_output else []
    kept_ids = {str(json.loads(line)["id"]) for line in kept}
    added: dict[str, tuple[bytes, SummaryResult]] = {}
    for path in sorted(parts.glob("part-*.jsonl")):
        for line in complete_records(path):
            result = result_from_dict(json.loads(line))
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
    remove_parts(parts)
    logger.info("merged %d records from %s into %s", len(added), parts, output)
    return [result for _, result in added.values()]


__all__ = [
    "PARTS_SUFFIX",
    "assign",
    "check_parts",
    "owned_groups",
    "part_file",
    "parts_dir",
    "process_barrier",
    "remove_parts",
    "summarize_in_parts",
    "world",
]
