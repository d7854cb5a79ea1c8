"""`mega2bart plan` against measurements: predicted and measured peak memory and time, one process per run.

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/bench_plan.py --raw benchmarks/results_plan.jsonl \
        --markdown benchmarks/results_plan.md                                     # the planner's measure (run P2)
    python benchmarks/bench_plan.py --raw benchmarks/results_plan_glibc_default.jsonl   # glibc's default allocator
    python benchmarks/bench_plan.py --from-raw benchmarks/results_plan.jsonl     # tables again, no new runs
    python benchmarks/bench_plan.py --only c1,t1,t2                               # some runs

Each configuration runs in a fresh `_plan_worker.py` process (the preset's shapes, random weights); its
measured peak is the peak RSS above the process's RSS before the model was built (see the worker). The
prediction is `mega2bart.plan.plan_run` for the same workload on the CPU, with the matmul rate measured
once here (`measure_matmul_rate`). The configurations marked `calibrate` are the ones the overhead
constants of `mega2bart/plan/memory.py` (`CPU_OVERHEAD`) were set from; the `test` rows were not used to set
anything. Results are appended to `--raw` as each run ends, so an interrupted run keeps what it measured.
The workers inherit the environment: with MALLOC_MMAP_THRESHOLD_=65536 glibc hands freed blocks back, so the
RSS follows the live tensors (what the planner counts); with its default sliding threshold the RSS also holds
freed heap memory (benchmarks/README.md, run P2, has both).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _harness import run_worker  # noqa: E402

# (name, role, size, task, length, batch, beams, new tokens, label tokens, dtype, checkpointing, optimizer),
# cheapest first
CONFIGS: list[tuple] = [
    ("c1", "calibrate", "tiny", "generate", 1024, 1, 1, 8, 0, "fp32", False, "adamw"),
    ("c2", "calibrate", "large", "generate", 1024, 1, 1, 4, 0, "fp32", False, "adamw"),
    ("t1", "test", "tiny", "train", 4096, 2, 1, 0, 64, "fp32", False, "adamw"),
    ("t2", "test", "tiny", "train", 16384, 1, 1, 0, 64, "fp32", True, "adamw"),
    ("t3", "test", "tiny", "generate", 16384, 1, 4, 8, 0, "fp32", False, "adamw"),
    ("t4", "test", "base", "generate", 1024, 1, 4, 8, 0, "fp32", False, "adamw"),
    ("t5", "test", "base", "train", 1024, 1, 1, 0, 128, "fp32", False, "adamw"),
    ("t6", "test", "large", "train", 1024, 1, 1, 0, 128, "fp32", True, "adamw"),
    ("t7", "test", "large", "generate", 1024, 1, 4, 4, 0, "bf16", False, "adamw"),
    ("t8", "test", "base", "train", 1024, 1, 1, 0, 128, "bf16", True, "adafactor"),
    ("t9", "test", "large", "generate", 4096, 1, 4, 4, 0, "fp32", False, "adamw"),
    ("t10", "test", "base", "train", 4096, 1, 1, 0, 128, "fp32", True, "sgd"),
    ("t11", "test", "large", "train", 4096, 1, 1, 0, 256, "fp32", True, "adamw"),
    ("t12", "test", "large", "generate", 16384, 1, 4, 4, 0, "fp32", False, "adamw"),
    ("t13", "test", "large", "train", 16384, 1, 1, 0, 512, "fp32", True, "adamw"),
]
FIELDS = (
    "name",
    "role",
    "size",
    "task",
    "length",
    "batch",
    "beams",
    "new_tokens",
    "label_tokens",
    "dtype",
    "gradient_checkpointing",
    "optimizer",
)


def specs(only: set[str] | None, threads: int) -> list[dict]:
    rows = [dict(zip(FIELDS, config, strict=True)) for config in CONFIGS]
    return [{**row, "threads": threads, "seed": 0} for row in rows if only is None or row["name"] in only]


def measure(spec: dict, timeout: float) -> dict:
    run = run_worker([sys.executable, str(HERE / "_plan_worker.py"), json.dumps(spec)], timeout=timeout)
    if run.killed:
        return {"spec": spec, "error": f"timed out after {timeout:.0f} s"}
    result = run.result()
    if result is not None:
        result["wall_seconds"] = run.wall_s
        return result
    return {"spec": spec, "error": (run.stderr.strip().splitlines() or ["no result"])[-1]}


def workload(spec: dict, device: str = "cpu"):
    """The planner's `Workload` of a row (also scripts/gpu_check.py's, with device "cuda")."""
    from mega2bart.plan import Workload

    return Workload(
        task=spec["task"],
        length=spec["length"],
        batch=spec["batch"],
        beams=spec["beams"],
        new_tokens=spec["new_tokens"] or 1,
        label_tokens=spec["label_tokens"] or 1,
        dtype=spec["dtype"],
        gradient_checkpointing=spec["gradient_checkpointing"],
        optimizer=spec["optimizer"],
        device=device,
    )


def predict(spec: dict, rate) -> dict:
    from mega2bart.plan import load_shape, plan_run

    return plan_run(load_shape(spec["size"]), workload(spec), matmul_tflops=rate).as_dict()


def gb(value: float) -> str:
    return f"{value / 1e9:.3f}"


def table(results: list[dict], rates: dict, compare: dict[str, dict] | None = None) -> str:
    """The markdown table (`rates`: the matmul rate of each row's dtype, as `mega2bart plan` measures it); with `compare` (run name -> result of another raw file, e.g. the same runs with
    glibc's default allocator) four more give that run's measured peak and time and the prediction's errors."""
    lines = [
        "| run | role | size | task | L | batch | beams | tokens | dtype | ckpt | optim | predicted GB | measured GB "
        "| error | predicted s | measured s | time error | peak phase |"
        + (" other run: measured GB | error | measured s | time error |" if compare else ""),
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|"
        + ("---:|---:|---:|---:|" if compare else ""),
    ]
    errors = []
    for result in results:
        spec = result["spec"]
        tokens = spec["new_tokens"] if spec["task"] == "generate" else spec["label_tokens"]
        head = (
            f"| {spec['name']} | {spec['role']} | {spec['size']} | {spec['task']} | {spec['length']:,} | "
            f"{spec['batch']} | {spec['beams'] if spec['task'] == 'generate' else ''} | {tokens} | {spec['dtype']} | "
            f"{'yes' if spec['gradient_checkpointing'] else ''} | "
            f"{spec['optimizer'] if spec['task'] == 'train' else ''} |"
        )
        if "error" in result:
            lines.append(f"{head} | | | | | | | {result['error']} |")
            continue
        plan = predict(spec, rates[spec["dtype"]])
        measured = result["measured_peak_bytes"]
        error = plan["peak_bytes"] / measured - 1
        if spec["role"] == "test":
            errors.append(error)
        other = ""
        if compare is not None:
            twin = compare.get(spec["name"], {})
            other = (
                f" {gb(twin['measured_peak_bytes'])} | {plan['peak_bytes'] / twin['measured_peak_bytes'] - 1:+.1%} | "
                f"{twin['seconds']:.2f} | {plan['seconds'] / twin['seconds'] - 1:+.0%} |"
                if "measured_peak_bytes" in twin
                else " | | | |"
            )
        lines.append(
            f"{head} {gb(plan['peak_bytes'])} | {gb(measured)} | {error:+.1%} | {plan['seconds']:.2f} | "
            f"{result['seconds']:.2f} | {plan['seconds'] / result['seconds'] - 1:+.0%} | {plan['peak_phase']} |{other}"
        )
    if errors:
        within15 = sum(abs(e) <= 0.15 for e in errors)
        within10 = sum(abs(e) <= 0.10 for e in errors)
        lines.append("")
        lines.append(
            f"Test rows: {len(errors)}; peak within +-15%: {within15}, within +-10%: {within10}; "
            f"largest error {max(errors, key=abs):+.1%}."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated run names (c1, t1, ...)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds per run")
    parser.add_argument("--raw", type=Path, help="append each run's result here (jsonl)")
    parser.add_argument("--from-raw", type=Path, help="no runs: tables from this jsonl")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--compare-raw", type=Path, help="add the measured peaks of this jsonl's runs (same names)")
    parser.add_argument("--tflops", type=float, help="matmul rate for the time predictions (default: measured)")
    args = parser.parse_args()

    if args.from_raw:
        results = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line.strip()]
        if args.only:
            results = [r for r in results if r["spec"]["name"] in args.only.split(",")]
    else:
        results = []
        for spec in specs(set(args.only.split(",")) if args.only else None, args.threads):
            result = measure(spec, args.timeout)
            results.append(result)
            if args.raw:
                with args.raw.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
            print(f"{spec['name']}: {result.get('measured_peak_bytes', result.get('error'))}", flush=True)
    from mega2bart.plan import measure_matmul_rate

    # each row's time at the rate of its own dtype (bf16 products run on other units than fp32 ones), as the CLI does
    rates = {dtype: measure_matmul_rate("cpu", dtype, args.tflops) for dtype in {r["spec"]["dtype"] for r in results}}
    compare = None
    if args.compare_raw:
        rows = [json.loads(line) for line in args.compare_raw.read_text().splitlines() if line.strip()]
        compare = {row["spec"]["name"]: row for row in rows}
    text = table(results, rates, compare)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
