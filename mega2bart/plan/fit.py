"""Whether a run fits a memory budget, the largest length / batch / beams that do, and what to change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .predict import plan_run
from .shapes import GIB, ModelShape, PlanError, Workload

# ----------------------------------------------------------------------------------------------
# fit: the largest length / batch / beams, and what to change
# ----------------------------------------------------------------------------------------------


def parse_bytes(text: str) -> int:
    """'24GiB', '24 GB', '80G', '512MiB', '1e9' -> bytes (GB = 1e9, GiB and a bare G = 2**30)."""
    units = {"": 1, "B": 1, "K": 1024, "KIB": 1024, "KB": 1000, "M": 1024**2, "MIB": 1024**2, "MB": 1000**2}
    units |= {"G": GIB, "GIB": GIB, "GB": 1000**3, "T": 1024**4, "TIB": 1024**4, "TB": 1000**4}
    cleaned = text.strip().upper().replace(" ", "")
    number = cleaned.rstrip("KMGTIB")
    unit = cleaned[len(number) :]
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise PlanError(f"cannot read {text!r} as a memory size: write e.g. 24GiB, 80GB or 512MiB") from None
    if not 0 < value <= 2**60:  # nan, inf and 1e400 too
        raise PlanError(f"--device-memory ({text!r}) must be a memory size above 0 and at most 1 EiB (e.g. 24GiB)")
    return int(value)


def _largest(fits: Callable[[int], bool], low: int, high: int, step: int = 1) -> int | None:
    """The largest multiple of `step` in [low, high] for which `fits` holds (assumed monotone), or None."""
    if not fits(low):
        return None
    if fits(high):
        return high
    lo, hi = low // step, high // step  # fits(lo*step) and not fits(hi*step)
    while hi - lo > 1:
        middle = (lo + hi) // 2
        lo, hi = (middle, hi) if fits(middle * step) else (lo, middle)
    return lo * step


# How each command that the planner checks spells the changes it proposes: `plan`'s own options, `train`'s
# (TrainConfig: --bf16, --batch-size, --max-source-length; the optimiser through extra_training_args), and
# the generation options of `eval` and `summarize` (--dtype, --num-beams, --batch-size, --max-input-tokens).
# A change a command has no flag for is not proposed to it.
FLAGS: dict[str, dict[str, str]] = {
    "plan": {
        "gradient_checkpointing": "add --gradient-checkpointing",
        "dtype": "use --dtype {}",
        "optimizer": "use --optimizer {}",
        "beams": "use --beams {}",
        "batch": "use --batch {}",
        "length": "use --length {}",
    },
    "train": {
        "gradient_checkpointing": "add --gradient-checkpointing",
        "dtype": "add --bf16 true",
        "optimizer": 'add --set "extra_training_args={{optim: {}}}"',
        "batch": "use --batch-size {}",
        "length": "use --max-source-length {}",
    },
    "generate": {
        "dtype": "use --dtype {}",
        "beams": "use --num-beams {}",
        "batch": "use --batch-size {}",
        "length": "use --max-input-tokens {}",
    },
}


def fit_report(
    shape: ModelShape, workload: Workload, device_memory: int, command: str = "plan", process_bytes: int | None = None
) -> dict[str, Any]:
    """Whether `workload` fits in `device_memory` bytes (the whole process's peak, `process_bytes` as in
    `plan_run`), the largest length/batch/beams that do, and changes that fit, each written with the flag of
    `command` ("plan", "train", or "generate" for eval and summarize)."""
    flags = FLAGS[command]

    def peak(w: Workload) -> int:
        return plan_run(shape, w, process_bytes=process_bytes).peak_bytes

    def fits_with(**changes: Any) -> Callable[[int], bool]:
        name = next(iter(changes))
        return lambda value: peak(replace(workload, **{name: value})) <= device_memory

    need = peak(workload)
    step = shape.encoder.chunk or 1
    largest = {
        "length": _largest(
            fits_with(length=1), step if step <= workload.length else 1, max(workload.length, 1 << 20), step
        ),
        "batch": _largest(fits_with(batch=1), 1, max(workload.batch, 4096)),
    }
    if workload.task == "generate":
        largest["beams"] = _largest(fits_with(beams=1), 1, max(workload.beams, 64))
    changes: list[dict[str, Any]] = []
    options: list[tuple[str, Any]] = []
    if workload.task == "train" and not workload.gradient_checkpointing:
        options.append(("gradient_checkpointing", True))
    if workload.dtype == "fp32":
        options.append(("dtype", "bf16"))
    if workload.task == "train" and workload.optimizer == "adamw":
        options.append(("optimizer", "adafactor"))
    if workload.task == "generate" and workload.beams > 1:
        options.append(("beams", max(1, workload.beams // 2)))
    if workload.batch > 1:
        options.append(("batch", max(1, workload.batch // 2)))
    for name, value in options:
        if name not in flags:
            continue
        bytes_needed = peak(replace(workload, **{name: value}))
        text = flags[name].format(value)
        changes.append({"change": text, "peak_bytes": bytes_needed, "fits": bytes_needed <= device_memory})
    if need > device_memory and largest["length"] is not None and largest["length"] < workload.length:
        bytes_needed = peak(replace(workload, length=largest["length"]))
        text = flags["length"].format(largest["length"])
        changes.append({"change": text, "peak_bytes": bytes_needed, "fits": True})
    return {
        "device_memory": device_memory,
        "peak_bytes": need,
        "fits": need <= device_memory,
        "largest": largest,
        "changes": changes,
    }


def fix_message(need: int, available: int, changes: list[dict[str, Any]], free_word: str = "free") -> str:
    """'needs 31.2 GiB, 23.6 GiB free: add --gradient-checkpointing (14.1 GiB) or use --dtype bf16 (20.3 GiB)'."""
    fitting = [c for c in changes if c["fits"]]
    head = f"needs {need / GIB:.1f} GiB, {available / GIB:.1f} GiB {free_word}"
    if not fitting:
        return f"{head}: no single change fits; shorten the input or use a larger device"
    return head + ": " + " or ".join(f"{c['change']} ({c['peak_bytes'] / GIB:.1f} GiB)" for c in fitting[:3])
