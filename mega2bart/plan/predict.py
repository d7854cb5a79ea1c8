"""The plan of one run: its peak phase and breakdown, FLOPs and seconds (`plan_run`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .memory import _block, memory_phases, overhead, padded_length
from .shapes import GIB, ModelShape, Workload
from .timing import MatmulRate, _flops_and_seconds


@dataclass
class Plan:
    shape: ModelShape
    workload: Workload
    peak_bytes: int
    peak_phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]
    flops: float
    seconds: float
    rate: MatmulRate
    parameters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.shape.name,
            "workload": asdict(self.workload),
            "parameters": self.parameters,
            "peak_bytes": self.peak_bytes,
            "peak_gib": round(self.peak_bytes / GIB, 3),
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


# What the CPU measurements of benchmarks/bench_plan.py showed beyond the tensors (benchmarks/README.md, run P2).
CPU_RSS_NOTE = (
    "the CPU figure counts tensors; glibc's malloc keeps freed blocks under its sliding mmap threshold (32 MiB "
    "at most) for reuse, so the RSS can stay higher, most for small models (bench_plan run P2: up to 1.55x the "
    "plan); MALLOC_MMAP_THRESHOLD_=65536 makes it hand them back"
)


def plan_run(shape: ModelShape, workload: Workload, matmul_tflops: MatmulRate | dict[str, Any] | None = None) -> Plan:
    """Predicted peak memory (with its breakdown), FLOPs and seconds of `workload` on `shape`."""
    if isinstance(matmul_tflops, dict):
        matmul_tflops = MatmulRate(**matmul_tflops)
    rate = matmul_tflops or MatmulRate(0.1, 0.015, "assumed 0.1 TFLOP/s")
    calibration = overhead(workload.device)
    totals: dict[str, int] = {}
    detailed: dict[str, dict[str, int]] = {}
    for name, parts in memory_phases(shape, workload).items():
        tensors = sum(parts.values())
        parts["rest"] = int(calibration["fraction"] * tensors + calibration["bytes"])
        detailed[name], totals[name] = parts, tensors + parts["rest"]
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
    )
