"""The planner's estimate of one document's summary on this machine: `plan_document`.

`Summarizer` cuts a document longer than its window into overlapping windows (`window_spans`), generates them
`batch_size` at a time, and summarises the joined window summaries again while they are still longer than the
window (`merge="summarize"`, at most `max_levels` levels). `plan_document` walks the same levels: level 0 is
exact (the document's tokens), each level above it is planned at its longest, every summary `new_tokens` long
(plus the separator's tokens between two), so the level counts above 0 are "at most". Each generate call is one
`mega2bart.plan` workload (window length + special tokens, the call's batch, beams, new tokens); the estimate is
the sum of their seconds and the largest of their peaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mega2bart.plan import GIB, MatmulRate, ModelShape, Workload, plan_run
from mega2bart.summarize import window_spans


@dataclass
class Estimate:
    """Predicted cost of summarising one document (see the module docstring)."""

    tokens: int
    """The document's tokens, no special tokens."""
    windows: list[int]
    """Windows per level: level 0 exact, the levels above at most."""
    calls: int
    """Generate calls (each at most `batch_size` windows)."""
    seconds: float
    peak_bytes: int
    device: str
    dtype: str
    rate: MatmulRate
    truncated: bool = False
    """True when the last planned level would still exceed the window and be cut."""
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """What the page shows before a run."""
        above = self.windows[1:]
        levels = (
            f", then {len(above)} summary-of-summaries level{'s' if len(above) > 1 else ''} "
            f"(at most {' + '.join(map(str, above))} window{'s' if sum(above) > 1 else ''})"
            if above
            else ""
        )
        cut = "; the last level would be cut to the window" if self.truncated else ""
        return (
            f"**Estimate** for this document on this machine ({self.device}, {self.dtype}; "
            f"matmul {self.rate.large:.3g} TFLOP/s, {self.rate.source}): {self.tokens:,} tokens -> "
            f"{self.windows[0]} window{'s' if self.windows[0] > 1 else ''}{levels}{cut}; {self.calls} generate "
            f"call{'s' if self.calls > 1 else ''}, about **{_duration(self.seconds)}**, peak memory about "
            f"**{self.peak_bytes / GIB:.2f} GiB** (`mega2bart plan`)."
        )


def plan_document(
    shape: ModelShape,
    tokens: int,
    *,
    window: int,
    overlap: int,
    specials: int,
    separator: int,
    batch_size: int,
    beams: int,
    new_tokens: int,
    merge: Literal["summarize", "concatenate"] = "summarize",
    max_levels: int = 3,
    dtype: str = "fp32",
    device: str = "cpu",
    rate: MatmulRate | None = None,
) -> Estimate:
    """The `Estimate` of a document of `tokens` tokens (`window`, `overlap`, `specials`, `batch_size`, `merge` and
    `max_levels` as the `Summarizer` has them, `separator` the tokens of "\\n" that join summaries; `beams` and `new_tokens` as generation will use them)."""
    length, level, counts, calls, truncated = tokens, 0, [], 0, False
    seconds, peak = 0.0, 0
    plans: dict[tuple[int, int], tuple[float, int]] = {}  # (length, batch) -> (seconds, peak bytes)
    while True:
        if length > window and level >= max_levels:
            spans, truncated = [(0, window)], True
        else:
            spans = window_spans(max(length, 1), window, overlap)
        counts.append(len(spans))
        longest = max(end - start for start, end in spans)  # every span but a single short one is `window` long
        for start in range(0, len(spans), batch_size):
            key = (longest + specials, min(batch_size, len(spans) - start))
            if key not in plans:
                workload = Workload(
                    task="generate",
                    length=key[0],
                    batch=key[1],
                    beams=beams,
                    new_tokens=new_tokens,
                    dtype=dtype,  # type: ignore[arg-type]
                    device=device,  # type: ignore[arg-type]
                )
                plan = plan_run(shape, workload, rate)
                plans[key] = (plan.seconds, plan.peak_bytes)
            seconds += plans[key][0]
            peak = max(peak, plans[key][1])
            calls += 1
        if len(spans) == 1 or merge == "concatenate" or truncated:
            break
        length = len(spans) * new_tokens + (len(spans) - 1) * separator
        level += 1
    return Estimate(
        tokens=tokens,
        windows=counts,
        calls=calls,
        seconds=seconds,
        peak_bytes=peak,
        device=device,
        dtype=dtype,
        rate=rate or MatmulRate(0.1, 0.015, "assumed 0.1 TFLOP/s"),
        truncated=truncated,
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["Estimate", "plan_document"]
