"""`mega2bart plan` against measurements: predicted and measured peak memory and time, one process per run.

    python benchmarks/bench_plan.py --threads 1 --raw benchmarks/results_plan_p4.jsonl    # run P4's measure
    python benchmarks/bench_plan.py --malloc glibc --raw glibc.jsonl      # workers keep glibc's malloc defaults
    python benchmarks/bench_plan.py --from-raw benchmarks/results_plan_p4.jsonl   # tables again, no new runs
    python benchmarks/bench_plan.py --only c1,h1,h2                                # some runs

Each configuration runs in a fresh `_plan_worker.py` process that starts as a mega2bart command does (the
command modules imported, glibc's thresholds fixed unless --malloc glibc) and loads the preset's random model
from a directory saved once under --models, as `summarize` and `train` load theirs. Its measured peak is the
whole process's peak RSS (interpreter, load and run; see the worker), in the environment this script runs in.
The prediction is `mega2bart.plan.plan_run` for the same workload on the CPU, its process share the one
`mega2bart plan` measures in itself (a fresh `mega2bart plan` is run once for it, or --process-bytes), with the
matmul rate measured once here (`measure_matmul_rate`, or --tflops). The rows marked `calibrate` set the
allocator constants of `mega2bart/plan/memory.py` (`CPU_OVERHEAD`); `test` rows were checked while the
planner was developed; `held-out` rows were never used for anything. Results are appended to --raw as each run
ends, so an interrupted run keeps what it measured. Results of runs P1-P3 (no whole-process figure) are
compared as they were: the peak above the process's baseline against the plan without its process share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _harness import run_worker  # noqa: E402

# where the "disk" rows' random models are saved (about 3 GB for the three presets; --models)
MODELS = Path(tempfile.gettempdir()) / "mega2bart-bench-plan-models"

# (name, role, size, task, length, batch, beams, new tokens, label tokens, dtype, checkpointing, optimizer),
# cheapest first; the `held-out` rows (each with its freeze and load) follow
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
# Never used to set anything (issue 33), and unlike the rows above: lengths that are not a multiple of the chunk,
# batches of 2-4, 2, 3 and 6 beams, other label lengths, SGD and Adafactor, bf16 autocast without checkpointing,
# the encoder frozen.
HELD_OUT: list[tuple] = [
    ("h1", "held-out", "base", "generate", 700, 2, 3, 4, 0, "fp32", False, "adamw", "none"),
    ("h2", "held-out", "large", "generate", 600, 1, 2, 3, 0, "bf16", False, "adamw", "none"),
    ("h3", "held-out", "base", "train", 512, 1, 1, 0, 48, "fp32", False, "adamw", "encoder"),
    ("h4", "held-out", "tiny", "train", 6144, 3, 1, 0, 32, "fp32", False, "sgd", "none"),
    ("h5", "held-out", "base", "train", 384, 1, 1, 0, 40, "bf16", False, "adamw", "none"),
    ("h6", "held-out", "large", "train", 512, 1, 1, 0, 64, "fp32", True, "adafactor", "encoder"),
    ("h7", "held-out", "tiny", "generate", 8000, 2, 6, 10, 0, "fp32", False, "adamw", "none"),
    ("h8", "held-out", "base", "generate", 900, 1, 1, 3, 0, "bf16", False, "adamw", "none"),
    ("h9", "held-out", "tiny", "train", 3000, 2, 1, 0, 80, "fp32", True, "sgd", "none"),
    ("h10", "held-out", "tiny", "train", 2048, 4, 1, 0, 128, "fp32", False, "adafactor", "encoder"),
    ("h11", "held-out", "base", "train", 600, 1, 1, 0, 24, "fp32", True, "sgd", "none"),
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


def specs(only: set[str] | None, threads: int, malloc: str = "mega2bart", models: Path | None = None) -> list[dict]:
    """The worker specs of the rows named in `only` (all: None). Every row loads the preset's random model from a
    directory under `models` ("disk", as a command loads its model; runs P1-P3 built it in the worker)."""
    rows = [dict(zip(FIELDS, config, strict=True)) | {"freeze": "none"} for config in CONFIGS]
    rows += [dict(zip((*FIELDS, "freeze"), config, strict=True)) for config in HELD_OUT]
    for row in rows:
        row.update(load="disk", model_dir=str((models or MODELS) / row["size"]))
    return [
        {**row, "threads": threads, "seed": 0, "malloc": malloc} for row in rows if only is None or row["name"] in only
    ]


def saved_model(spec: dict) -> None:
    """Write the random model of a "disk" row's preset (once; `_plan_worker.py --save`)."""
    target = Path(spec["model_dir"])
    if spec["load"] == "disk" and not (target / "config.json").is_file():
        command = [sys.executable, str(HERE / "_plan_worker.py"), "--save", spec["size"], str(target)]
        run_worker(command, timeout=1800)


def measure(spec: dict, timeout: float) -> dict:
    saved_model(spec)
    run = run_worker([sys.executable, str(HERE / "_plan_worker.py"), json.dumps(spec)], timeout=timeout)
    if run.killed:
        return {"spec": spec, "error": f"timed out after {timeout:.0f} s"}
    result = run.result()
    if result is not None:
        # other_load: cores' worth of CPU that anything else used meanwhile (times are only worth a quiet run's)
        result.update(wall_seconds=run.wall_s, other_load=round(run.other_load, 2), loadavg=os.getloadavg()[0])
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
        freeze=spec.get("freeze", "none"),
    )


def cli_process_bytes() -> int:
    """The process share that `mega2bart plan` measures in itself: a fresh `mega2bart plan` run's own figure."""
    command = [sys.executable, "-m", "mega2bart.cli", "plan", "tiny", "--length", "1024", "--tflops", "1", "--json"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return int(json.loads(out.stdout)["process_bytes"])


def predict(spec: dict, rate, process_bytes: int | None = None) -> dict:
    from mega2bart.plan import load_shape, plan_run

    shape = load_shape(spec["size"])
    return plan_run(shape, workload(spec), matmul_tflops=rate, process_bytes=process_bytes).as_dict()


def gb(value: float) -> str:
    return f"{value / 1e9:.3f}"


def measured_and_predicted(result: dict, plan: dict) -> tuple[int, int]:
    """The whole process's peak RSS and the plan's total; for a result of runs P1-P3 (no whole-process figure),
    the peak above the process's baseline and the plan without its process share."""
    if "process_peak_bytes" in result:
        return result["process_peak_bytes"], plan["peak_bytes"]
    return result["measured_peak_bytes"], plan["run_peak_bytes"]


def table(results: list[dict], rates: dict, compare: dict[str, dict] | None = None, process: int | None = None) -> str:
    """The markdown table (`rates`: each run's rate, by name, as `mega2bart plan` measures it for that workload;
    `process`: the plan's process share); with `compare` (run name -> result of another raw file, e.g. the same
    runs with glibc's default allocator) four more give that run's measured peak and time and the plan's errors."""
    lines = [
        "| run | role | size | task | L | batch | beams | tokens | dtype | ckpt | optim | freeze | predicted GB "
        "| measured GB | error | predicted s | measured s | time error | CPU s | other load | peak phase |"
        + (" other run: measured GB | error | measured s | time error |" if compare else ""),
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        + ("---:|---:|---:|---:|" if compare else ""),
    ]
    errors: dict[str, list[float]] = {}
    time_errors: dict[str, list[float]] = {}
    for result in results:
        spec = result["spec"]
        tokens = spec["new_tokens"] if spec["task"] == "generate" else spec["label_tokens"]
        head = (
            f"| {spec['name']} | {spec['role']} | {spec['size']} | {spec['task']} | {spec['length']:,} | "
            f"{spec['batch']} | {spec['beams'] if spec['task'] == 'generate' else ''} | {tokens} | {spec['dtype']} | "
            f"{'yes' if spec['gradient_checkpointing'] else ''} | "
            f"{spec['optimizer'] if spec['task'] == 'train' else ''} | "
            f"{spec.get('freeze', 'none') if spec.get('freeze', 'none') != 'none' else ''} |"
        )
        if "error" in result:
            lines.append(f"{head} | | | | | | | | | {result['error']} |")
            continue
        plan = predict(spec, rates[spec["name"]], process)
        measured, predicted = measured_and_predicted(result, plan)
        error = predicted / measured - 1
        errors.setdefault(spec["role"], []).append(error)
        time_errors.setdefault(spec["role"], []).append(plan["seconds"] / result["seconds"] - 1)
        other = ""
        if compare is not None:
            twin = compare.get(spec["name"], {})
            if "measured_peak_bytes" in twin:
                twin_measured, twin_predicted = measured_and_predicted(twin, plan)
                other = (
                    f" {gb(twin_measured)} | {twin_predicted / twin_measured - 1:+.1%} | "
                    f"{twin['seconds']:.2f} | {plan['seconds'] / twin['seconds'] - 1:+.0%} |"
                )
            else:
                other = " | | | |"
        load = result.get("other_load")
        # the measured call's CPU time (user + system): on one thread, what its wall time is on a quiet machine
        cpu = result["cpu_user_s"] + result["cpu_sys_s"] if "cpu_user_s" in result else None
        lines.append(
            f"{head} {gb(predicted)} | {gb(measured)} | {error:+.1%} | {plan['seconds']:.2f} | "
            f"{result['seconds']:.2f} | {plan['seconds'] / result['seconds'] - 1:+.0%} | "
            f"{'' if cpu is None else f'{cpu:.2f}'} | {'' if load is None else f'{load:.1f}'} | "
            f"{plan['peak_phase']} |{other}"
        )
    lines.append("")
    for role in ("test", "held-out"):
        if errors.get(role):
            within15 = sum(abs(e) <= 0.15 for e in errors[role])
            within10 = sum(abs(e) <= 0.10 for e in errors[role])
            lines.append(
                f"{role} rows: {len(errors[role])}; peak within +-15%: {within15}, within +-10%: {within10}; "
                f"largest error {max(errors[role], key=abs):+.1%}; time within +-30%: "
                f"{sum(abs(e) <= 0.30 for e in time_errors[role])}, largest time error "
                f"{max(time_errors[role], key=abs):+.0%}."
            )
    if process is not None:
        lines.append(f"Process share of the plan (`mega2bart plan`'s own RSS after its imports): {gb(process)} GB.")
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
    parser.add_argument(
        "--malloc",
        choices=("mega2bart", "glibc"),
        default="mega2bart",
        help="the workers start as a mega2bart command (glibc's thresholds fixed) or keep glibc's defaults",
    )
    parser.add_argument("--models", type=Path, default=MODELS, help="where the disk rows' saved models go")
    parser.add_argument(
        "--process-bytes", type=int, help="the plan's process share (default: what `mega2bart plan` measures)"
    )
    args = parser.parse_args()

    if args.from_raw:
        results = [json.loads(line) for line in args.from_raw.read_text().splitlines() if line.strip()]
        if args.only:
            results = [r for r in results if r["spec"]["name"] in args.only.split(",")]
    else:
        results = []
        only = set(args.only.split(",")) if args.only else None
        for spec in specs(only, args.threads, args.malloc, args.models):
            result = measure(spec, args.timeout)
            results.append(result)
            if args.raw:  # the models folder as "<--models>": a results file holds no path of the machine
                line = json.dumps(result).replace(json.dumps(str(args.models))[1:-1], "<--models>")
                with args.raw.open("a") as handle:
                    handle.write(line + "\n")
            print(f"{spec['name']}: {result.get('process_peak_bytes', result.get('error'))}", flush=True)
    import torch

    from mega2bart.plan import load_shape, measure_workload_rate

    # each row's time at the rate `mega2bart plan` measures for its workload (the dtype's matmul rate and the
    # model's efficiency for its task and length), on the threads the rows ran with
    torch.set_num_threads(results[0]["spec"]["threads"] if results else args.threads)
    rates = {
        r["spec"]["name"]: measure_workload_rate(
            load_shape(r["spec"]["size"]).encoder, workload(r["spec"]), args.tflops
        )
        for r in results
    }
    compare = None
    if args.compare_raw:
        rows = [json.loads(line) for line in args.compare_raw.read_text().splitlines() if line.strip()]
        compare = {row["spec"]["name"]: row for row in rows}
    process = args.process_bytes or cli_process_bytes()
    text = table(results, rates, compare, process)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
