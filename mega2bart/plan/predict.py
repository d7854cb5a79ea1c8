"""The plan of one run: its peak phase and breakdown, FLOPs and seconds (`plan_run`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .allocator import MMAP_THRESHOLD
from .memory import _block, memory_phases, overhead, padded_length
from .shapes import GIB, ModelShape, Workload
from .timing import MatmulRate, _flops_and_seconds


@dataclass
class Plan:
    shape: ModelShape
    workload: Workload
    peak_bytes: int  # the whole process: process_bytes + the largest phase
    peak_phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]
    flops: float
    seconds: float
    rate: MatmulRate
    parameters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    process_bytes: int = 0  # the interpreter and libraries (CPU) or the CUDA context, in every phase
    process_source: str = ""

    @property
    def run_peak_bytes(self) -> int:
        """The largest phase without the process: tensors and the allocator's share (what
        torch.cuda.max_memory_allocated compares with on a GPU)."""
        return self.peak_bytes - self.process_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.shape.name,
            "workload": asdict(self.workload),
            "parameters": self.parameters,
            "peak_bytes": self.peak_bytes,
            "peak_gib": round(self.peak_bytes / GIB, 3),
            "process_bytes": self.process_bytes,
            "process_source": self.process_source,
            "run_peak_bytes": self.run_peak_bytes,
            "peak_phase": self.peak_phase,
            "breakdown": self.breakdown,
            "phases": self.phases,
            "flops": self.flops,
            "seconds": self.seconds,
            "matmul_tflops": asdict(self.rate),
            "notes": self.notes,
        }


# ----------------------------------------------------------------------------------------------
# the plan
# ----------------------------------------------------------------------------------------------


# What the CPU measurements of benchmarks/bench_plan.py showed beyond the tensors (benchmarks/README.md, runs P2, P4, P5).
CPU_RSS_NOTE = (
    "CPU: the peak RSS of the whole process; mega2bart's commands fix glibc's malloc thresholds at start-up "
    f"(mega2bart.plan.allocator: freed blocks of {MMAP_THRESHOLD // 2**20} MiB or more are handed back); in another "
    "process with glibc's defaults (no MALLOC_MMAP_THRESHOLD_) the heap keeps freed blocks and the RSS can stay higher (bench_plan run P2: up to "
    "1.55x the tensors)"
)
CUDA_NOTE = (
    "CUDA: GPU memory; the CUDA context ({context:.2f} GiB) and the allocator's share ({fraction:.0%} of the tensors + "
    "{bytes:.2f} GiB) are assumed, not measured: scripts/gpu_check.sh measures them on a GPU"
)


def measure_process_bytes() -> int | None:
    """This process's RSS after importing what every mega2bart command has imported when it starts (torch,
    transformers, datasets, the Trainer, mega2bart's configs): the interpreter and libraries that a run's process
    holds besides its tensors. None where /proc/self/statm is missing (not Linux)."""
    import os

    from .. import pretraining, summarize, training  # noqa: F401 (the imports of mega2bart/cli.py)

    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def plan_run(
    shape: ModelShape,
    workload: Workload,
    matmul_tflops: MatmulRate | dict[str, Any] | None = None,
    process_bytes: int | None = None,
    process_source: str | None = None,
) -> Plan:
    """Predicted peak memory of the whole process (with its breakdown), FLOPs and seconds of `workload` on
    `shape`. `process_bytes`: what the process holds before the model (default: `overhead(device)`'s)."""
    if isinstance(matmul_tflops, dict):
        matmul_tflops = MatmulRate(**matmul_tflops)
    rate = matmul_tflops or MatmulRate(0.1, 0.015, "assumed 0.1 TFLOP/s")
    calibration = overhead(workload.device)
    if process_bytes is None:
        process_bytes = int(calibration["process_bytes"])
        process_source = process_source or (
            "assumed CUDA context" if workload.device == "cuda" else "measured constant (CPU_OVERHEAD)"
        )
    totals: dict[str, int] = {}
    detailed: dict[str, dict[str, int]] = {}
    for name, parts in memory_phases(shape, workload).items():
        tensors = sum(parts.values())
        parts["allocator"] = int(calibration["fraction"] * tensors + calibration["bytes"])
        parts["process"] = process_bytes
        detailed[name], totals[name] = parts, tensors + parts["allocator"] + process_bytes
    peak_phase = max(totals, key=totals.__getitem__)
    flops, seconds = _flops_and_seconds(shape, workload, rate)
    notes = []
    if workload.task == "train" and workload.device == "cpu" and shape.decoder.attention_dropout > 0:
        notes.append("CPU training with attention dropout: SDPA's math path keeps the cross-attention probabilities")
    if workload.length > shape.encoder.max_positions and shape.encoder.relative_bias == "simple":
        if _block(shape.encoder, padded_length(shape.encoder, workload.length)) > shape.encoder.max_positions:
            notes.append(f"length beyond the encoder's {shape.encoder.max_positions} positions")
    if workload.device == "cpu":
        notes.append(CPU_RSS_NOTE)
    else:
        GiB = float(GIB)
        notes.append(
            CUDA_NOTE.format(
                context=process_bytes / GiB, fraction=calibration["fraction"], bytes=calibration["bytes"] / GiB
            )
        )
    return Plan(
        shape=shape,
        workload=workload,
        peak_bytes=totals[peak_phase],
        peak_phase=peak_phase,
        breakdown=detailed[peak_phase],
        phases=totals,
        flops=flops,
        seconds=seconds,
        rate=rate,
        parameters=shape.parameters(),
        notes=notes,
        process_bytes=process_bytes,
        process_source=process_source or "given",
    )
