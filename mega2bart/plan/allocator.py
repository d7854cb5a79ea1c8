"""glibc's malloc, told at start-up to hand large freed blocks back, so that a mega2bart command's RSS stays
near its live tensors (what the plan counts) instead of the heap's high-water mark.

With its defaults glibc serves blocks below its mmap threshold from the heap and keeps what is freed there; the
threshold slides up to the largest mmapped block freed so far (32 MiB at most), so after the first large tensor
is freed every smaller one comes from the heap, and the RSS can stay far above the live tensors
(benchmarks/README.md, bench_plan runs P2 and P4: up to 1.55x the tensors). `mallopt` fixes both thresholds
in-process, the same as the MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ variables do at exec time, and
turns the sliding off. Every block at or above the mmap threshold costs a page fault per 4 KiB page each time
it is allocated; blocks below it are reused from the heap. bench_malloc (benchmarks/README.md, run P5) measured
256 KiB (what the commands set until then), 4 MiB and 16 MiB against glibc's defaults, paired and interleaved:
256 KiB cost 1.2x-1.7x the CPU time and 4 MiB 1.04x-1.10x (twice the system time), while 16 MiB was within the
noise of the defaults (0.92x-1.05x) and kept the peaks 0-6% below them. Blocks below 16 MiB stay in the heap,
so the tiny model's training rows measure above the plan's tensors (bench_plan's h4, h9, h11: -10% to -12%, other rows within 2%).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

# blocks of this size or more are mmapped and unmapped when freed; smaller ones are served (and reused) from the
# heap. Chosen with bench_malloc's figures (benchmarks/README.md, run P5): the smallest setting measured whose CPU
# cost is within the noise of glibc's defaults
MMAP_THRESHOLD = 16 * 1024 * 1024
# the heap's free top is handed back once it passes this (twice the mmap threshold, glibc's own rule when it slides)
TRIM_THRESHOLD = 32 * 1024 * 1024

# set to "0" to keep glibc's defaults in a mega2bart command (the allocator's own MALLOC_*_ variables win too)
OPT_OUT_VARIABLE = "MEGA2BART_MALLOC_TRIM"

_applied: dict[str, int] = {}


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt  # noqa: B018 (glibc only: musl and macOS have no mallopt)
        libc.gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def keep_rss_near_live(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> dict[str, int]:
    """Fix glibc's mmap and trim thresholds for this process (at a command's start-up). Returns what was set
    ({} where nothing was: not glibc, the user set a MALLOC_*_THRESHOLD_ variable, or MEGA2BART_MALLOC_TRIM=0)."""
    if os.environ.get(OPT_OUT_VARIABLE, "1") == "0":
        return {}
    if any(os.environ.get(f"MALLOC_{name}_THRESHOLD_") for name in ("MMAP", "TRIM")):
        return {}  # the user's own setting wins
    libc = _libc()
    if libc is None:
        return {}
    if not (libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold) and libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)):
        return {}
    _applied.update(mmap_threshold=mmap_threshold, trim_threshold=trim_threshold)
    return dict(_applied)


def applied() -> dict[str, int]:
    """The thresholds `keep_rss_near_live` set in this process ({} when it has not)."""
    return dict(_applied)


def trim_heap() -> bool:
    """Hand the free pages of glibc's heap back to the system now (`malloc_trim(0)`). True when some were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))
