"""`mega2bart plan` against CUDA measurements: the prepared GPU check of issue 21 (run by scripts/gpu_check.sh).

    python scripts/gpu_check.py --out gpu_results            # every row, each in its own process (a CUDA GPU)
    python scripts/gpu_check.py --dry-run                    # no GPU needed: the rows and their predictions

Each row runs in a fresh process: the model is built with the preset's shapes and random weights (mega2bart:
as benchmarks/_plan_worker.py builds it, then moved to the GPU; LED: LEDForConditionalGeneration shaped like
allenai/led-large-16384, benchmarks/_generate_worker.py's LED_LARGE_CONFIG, built on the GPU); nothing is
downloaded. The measured peak is `torch.cuda.max_memory_allocated()` over the run (weights included) minus what
was allocated before the model existed, the figure the plan's tensors and allocator share (`run_peak_bytes`) are
for; the caching allocator's reserved peak is recorded beside it, and the device memory in use before the model
(the CUDA context) beside the context the plan assumes (its `process_bytes` on CUDA). Generation uses mega2bart's shared-encoder `generate`, or
the parent class's stock `EncoderDecoderModel.generate` on the same model (`stock`), with
benchmarks/_generate_worker.py's beam settings and exactly `new_tokens` new tokens; a training row is two steps
(forward with labels, backward, optimiser step), bf16 as autocast. Rows the planner cannot plan (stock, LED)
are measured only, for comparison. Results: `<out>/gpu_check.json` (every row, with the machine) and
`<out>/gpu_check.md` (the table). The rows are sized to finish in well under 8 minutes on one large GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
RESULT_PREFIX = "GPU_CHECK_RESULT "

# name, case (mega2bart | stock | led), task, size, length, batch, beams, new tokens, label tokens, dtype,
# gradient checkpointing, optimizer
ROWS: list[tuple] = [
    ("g1", "mega2bart", "generate", "large", 1024, 1, 4, 64, 0, "fp32", False, "adamw"),
    ("g2", "mega2bart", "generate", "large", 16384, 1, 4, 256, 0, "fp32", False, "adamw"),
    ("g3", "mega2bart", "generate", "large", 16384, 1, 4, 256, 0, "bf16", False, "adamw"),
    ("g4", "stock", "generate", "large", 16384, 1, 4, 256, 0, "fp32", False, "adamw"),
    ("g5", "led", "generate", "large", 16384, 1, 4, 256, 0, "fp32", False, "adamw"),
    ("r1", "mega2bart", "train", "base", 4096, 2, 1, 0, 256, "fp32", False, "adamw"),
    ("r2", "mega2bart", "train", "large", 1024, 1, 1, 0, 256, "fp32", False, "adamw"),
    ("r3", "mega2bart", "train", "large", 16384, 1, 1, 0, 512, "fp32", True, "adamw"),
    ("r4", "mega2bart", "train", "large", 16384, 1, 1, 0, 512, "bf16", True, "adamw"),
    ("r5", "mega2bart", "train", "large", 16384, 1, 1, 0, 512, "bf16", False, "adafactor"),
]
FIELDS = (
    "name",
    "case",
    "task",
    "size",
    "length",
    "batch",
    "beams",
    "new_tokens",
    "label_tokens",
    "dtype",
    "gradient_checkpointing",
    "optimizer",
)


def rows(only: set[str] | None = None) -> list[dict[str, Any]]:
    selected = [dict(zip(FIELDS, row, strict=True)) for row in ROWS]
    unknown = (only or set()) - {row["name"] for row in selected}
    if unknown:
        raise SystemExit(f"unknown row(s) {', '.join(sorted(unknown))}: choose from {', '.join(r[0] for r in ROWS)}")
    return [row for row in selected if only is None or row["name"] in only]


def predict(row: dict[str, Any], tflops: float | None) -> dict[str, Any] | None:
    """The planner's CUDA plan of a row (None for stock and LED: the planner plans mega2bart's own path)."""
    if row["case"] != "mega2bart":
        return None
    from bench_plan import workload

    from mega2bart.plan import load_shape, measure_workload_rate, plan_run

    shape, work = load_shape(row["size"]), workload(row, "cuda")
    return plan_run(shape, work, measure_workload_rate(shape.encoder, work, tflops)).as_dict()


# ----------------------------------------------------------------------------------------------
# one row, in its own process
# ----------------------------------------------------------------------------------------------


def _build(row: dict[str, Any]):
    import torch

    dtype = torch.bfloat16 if row["dtype"] == "bf16" and row["task"] == "generate" else torch.float32
    if row["case"] == "led":
        from _generate_worker import LED_CONFIGS
        from transformers import LEDConfig, LEDForConditionalGeneration

        torch.manual_seed(0)
        with torch.device("cuda"):
            return LEDForConditionalGeneration(LEDConfig(**LED_CONFIGS[row["size"]])).to(dtype)
    from _plan_worker import build

    return build(row["size"], dtype).to("cuda")


def run_row(row: dict[str, Any]) -> dict[str, Any]:
    import torch
    from _generate_worker import GENERATION_SETTINGS, generate_fn, led_extras

    torch.manual_seed(0)
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    # the device memory in use before any tensor: this process's CUDA context (and anything else on the GPU),
    # what the plan assumes as its "process" share on CUDA
    free, total = torch.cuda.mem_get_info()
    context = total - free
    model = _build(row)
    config = model.config
    vocab = config.vocab_size if row["case"] == "led" else config.encoder.vocab_size
    ids = torch.randint(4, min(vocab, 50000), (row["batch"], row["length"]), device="cuda")
    mask = torch.ones_like(ids)
    result: dict[str, Any] = {"weights_bytes": torch.cuda.memory_allocated() - before}
    torch.cuda.synchronize()
    start = time.perf_counter()
    if row["task"] == "generate":
        model.eval()
        generate = generate_fn(row["case"], model)
        extra = led_extras(row["case"], ids)
        with torch.inference_mode():
            out = generate(
                input_ids=ids,
                attention_mask=mask,
                num_beams=row["beams"],
                max_new_tokens=row["new_tokens"],
                min_new_tokens=row["new_tokens"],
                do_sample=False,
                decoder_start_token_id=2,
                pad_token_id=1,
                eos_token_id=2,
                **extra,
                **GENERATION_SETTINGS,
            )
        sequences = out.sequences if hasattr(out, "sequences") else out
        result["output_shape"] = list(sequences.shape)
    else:
        model.train()
        if row["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        labels = torch.randint(4, min(vocab, 50000), (row["batch"], row["label_tokens"]), device="cuda")
        optimizer = {
            "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True),
            "adafactor": lambda: torch.optim.Adafactor(model.parameters(), lr=1e-5),
            "sgd": lambda: torch.optim.SGD(model.parameters(), lr=1e-5),
        }[row["optimizer"]]()
        steps = []
        for _ in range(2):
            step_start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=row["dtype"] == "bf16"):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            steps.append(time.perf_counter() - step_start)
        result["step_seconds"] = steps
    torch.cuda.synchronize()
    result["seconds"] = result["step_seconds"][-1] if "step_seconds" in result else time.perf_counter() - start
    result["measured_peak_bytes"] = torch.cuda.max_memory_allocated() - before
    result["max_reserved_bytes"] = torch.cuda.max_memory_reserved()
    result["context_bytes"] = context
    return result


# ----------------------------------------------------------------------------------------------
# the driver
# ----------------------------------------------------------------------------------------------


def measure(row: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(row)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    return {"error": (lines or [f"exit code {done.returncode}, no result"])[-1][-300:]}


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| row | case | task | size | L | batch | beams | tokens | dtype | ckpt | optim | predicted GiB | "
        "measured GiB | error | reserved GiB | context GiB (plan assumes) | predicted s | measured s |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    gib = 1024**3
    for entry in results:
        row, plan, measured = entry["row"], entry.get("plan"), entry.get("measured", {})
        tokens = row["new_tokens"] if row["task"] == "generate" else row["label_tokens"]
        head = (
            f"| {row['name']} | {row['case']} | {row['task']} | {row['size']} | {row['length']:,} | {row['batch']} | "
            f"{row['beams'] if row['task'] == 'generate' else ''} | {tokens} | {row['dtype']} | "
            f"{'yes' if row['gradient_checkpointing'] else ''} | {row['optimizer'] if row['task'] == 'train' else ''} |"
        )
        # tensors + the allocator's share against max_memory_allocated; the context beside the plan's assumption
        predicted = f"{plan['run_peak_bytes'] / gib:.2f}" if plan else ""
        if "error" in measured:
            lines.append(f"{head} {predicted} | {measured['error']} | | | | | |")
            continue
        peak = measured["measured_peak_bytes"]
        error = f"{plan['run_peak_bytes'] / peak - 1:+.1%}" if plan else ""
        seconds = f"{plan['seconds']:.1f}" if plan else ""
        context = f"{measured['context_bytes'] / gib:.2f}" if "context_bytes" in measured else "–"
        assumed = f" ({plan['process_bytes'] / gib:.2f})" if plan else ""
        lines.append(
            f"{head} {predicted} | {peak / gib:.2f} | {error} | {measured['max_reserved_bytes'] / gib:.2f} | "
            f"{context}{assumed} | {seconds} | {measured['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_results"), help="folder for the JSON and the table")
    parser.add_argument("--only", help="comma-separated row names (g1, r4, ...)")
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds per row")
    parser.add_argument("--tflops", type=float, help="matmul TFLOP/s for the time predictions (default: measured)")
    parser.add_argument("--dry-run", action="store_true", help="print the rows and their predictions; run nothing")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(RESULT_PREFIX + json.dumps(run_row(json.loads(args.worker))), flush=True)
        return
    selected = rows(set(args.only.split(",")) if args.only else None)
    if args.dry_run:
        # no GPU here: the time predictions assume an H200-class bf16 rate unless --tflops says otherwise
        tflops = args.tflops or 400.0
        print(f"would run {len(selected)} row(s), each in its own process, writing {args.out}/gpu_check.json:")
        for row in selected:
            plan = predict(row, tflops)
            what = (
                f"predicted {plan['peak_bytes'] / 1024**3:.2f} GiB ({plan['peak_phase']})" if plan else "measured only"
            )
            print(f"  {row['name']}: {json.dumps({k: row[k] for k in FIELDS[1:]})} -> {what}")
        return

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: torch sees no CUDA device (use --dry-run to see what would run)")
    args.out.mkdir(parents=True, exist_ok=True)
    machine = {
        "device": torch.cuda.get_device_name(),
        "device_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
        "torch": torch.__version__,
    }
    results = []
    for row in selected:
        plan = predict(row, args.tflops)
        started = time.perf_counter()
        measured = measure(row, args.timeout)
        results.append({"row": row, "plan": plan, "measured": measured, "wall_seconds": time.perf_counter() - started})
        print(f"{row['name']}: {measured.get('measured_peak_bytes', measured.get('error'))}", flush=True)
        (args.out / "gpu_check.json").write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    text = table(results)
    (args.out / "gpu_check.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
