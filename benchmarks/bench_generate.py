"""Speed and memory of long-document generation: mega2bart against transformers' stock generation and LED-large.

A benchmark, not a test: it prints markdown tables (encoder time, time to first token, time per further token,
total, peak RSS) and ratios against the baselines measured in the same run, and checks the targets of issue 10.
Every measurement runs in a fresh subprocess (`_generate_worker.py`), so each peak RSS is that case's own.

    .venv/bin/python benchmarks/bench_generate.py --quick                      # smoke test, tiny models
    .venv/bin/python benchmarks/bench_generate.py --json gen.json --markdown gen.md   # the full run

Rows (batch 1, random init from configs, no Hub):
- mega2bart: `mega2bart build --preset large --random-init`'s model (seed MEGA encoder shape + bart-large decoder
  shape, 376.8M parameters) generating with `model.generate`;
- stock:     the same weights (same seed) through `transformers.EncoderDecoderModel.generate(model, ...)`, the
             parent class's generation;
- led:       LEDForConditionalGeneration shaped like allenai/led-large-16384, global attention on the first token.
Generation: `--beams` beams, exactly `--new-tokens` new tokens (min_new_tokens = max_new_tokens), no_repeat_ngram 3,
length_penalty 2. Training (cases train-mega2bart, train-led): one forward + backward at `--train-lengths` tokens
with `--label-tokens` labels and gradient checkpointing, fp32.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "_generate_worker.py"
sys.path.insert(0, str(HERE))
from _harness import default_mem_limit_gb, fmt, machine_info, run_worker, worker_env, write_report  # noqa: E402

GENERATE_CASES = ("mega2bart", "stock", "led")
TRAIN_CASES = ("train-mega2bart", "train-led")
CASES = GENERATE_CASES + TRAIN_CASES
DTYPE_NAMES = ("fp32", "bf16")
SIZES = ("large", "base", "tiny")
# The targets of issue 10 are stated at this point: 16,384 tokens, 4 beams, 64 new tokens, fp32.
TARGET_POINT = {"length": 16384, "beams": 4, "new_tokens": 64, "dtype": "fp32"}


@dataclass
class Job:
    case: str  # mega2bart | stock | led | train-mega2bart | train-led
    length: int
    beams: int = 0  # 0 for training
    dtype: str = "fp32"

    @property
    def task(self) -> str:
        return "train" if self.case.startswith("train-") else "generate"

    @property
    def model(self) -> str:
        return self.case.removeprefix("train-")

    def label(self) -> str:
        if self.task == "train":
            return f"{self.case} L={self.length}"
        return f"{self.case} L={self.length} beams={self.beams} {self.dtype}"


def _relative(text: str) -> str:
    """A path under the repository as a relative path; anything else unchanged."""
    try:
        return str(Path(text).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return text


def run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job in a fresh subprocess; kill it past --timeout or past --mem-limit-gb of RSS."""
    spec = {
        "case": job.model,
        "task": job.task,
        "size": args.size,
        "length": job.length,
        "beams": job.beams,
        "new_tokens": args.new_tokens,
        "label_tokens": args.label_tokens,
        "dtype": job.dtype,
        "threads": args.threads,
        "seed": args.seed,
        "repeats": args.repeats,
        "warmup_tokens": args.warmup_tokens,
    }
    command = [sys.executable, str(WORKER), json.dumps(spec)]
    env = worker_env(args.threads, repo_on_path=True, PYTHONUNBUFFERED="1")
    run = run_worker(command, env=env, cwd=REPO, timeout=args.timeout, mem_limit_gb=args.mem_limit_gb)
    return {
        "job": asdict(job),
        "wall_s": run.wall_s,
        "other_load": run.other_load,
        # no machine paths in the report: the interpreter by name, the worker relative to the repository
        "command": shlex.join([Path(sys.executable).name, _relative(str(WORKER)), json.dumps(spec)]),
        **run.outcome(),
    }


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs = []
    for dtype in args.dtypes:
        for length in args.lengths:
            for beams in args.beams:
                cases = [case for case in GENERATE_CASES if case in args.cases]
                if args.targets_only and beams < max(args.beams):
                    cases = [case for case in cases if case == "mega2bart"]  # the baselines matter at the most beams
                jobs += [Job(case, length, beams, dtype) for case in cases]
    for length in args.train_lengths:
        jobs += [Job(case, length) for case in TRAIN_CASES if case in args.cases]
    return jobs


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------


def result_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        job, res = record["job"], record.get("result")
        row: dict[str, Any] = {**job, "other_load": record.get("other_load")}
        if res is None:
            rows.append({**row, "note": record["error"]})
            continue
        row.update(
            peak_rss_gb=res["peak_rss_gb"],
            phase_peak_rss_gb=res["phase_peak_rss_gb"],
            model_rss_gb=res["rss_model_gb"],
            n_params=res["n_params"],
            note="",
        )
        if job["case"].startswith("train-"):
            row.update(step_s=res["step_s"], grads=f"{res['params_with_grad']}/{res['params_trainable']}")
        else:
            row.update(
                {
                    key: res[key]
                    for key in (
                        "encoder_s",
                        "first_token_s",
                        "per_token_s",
                        "total_s",
                        "steps",
                        "encoder_calls",
                        "output_sha",
                        "weights_fingerprint",
                    )
                }
            )
            row["new_tokens"] = res["spec"]["new_tokens"]
        rows.append(row)
    return rows


def find(rows: list[dict[str, Any]], case: str, length: int, beams: int = 0, dtype: str = "fp32") -> dict | None:
    for row in rows:
        if (row["case"], row["length"], row["beams"], row["dtype"]) == (case, length, beams, dtype) and not row["note"]:
            return row
    return None


def ratio_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """speedup = baseline total / mega2bart total (> 1: mega2bart faster); memory = mega2bart peak / baseline peak."""
    out = []
    for dtype in args.dtypes:
        for length in args.lengths:
            for beams in args.beams:
                ours = find(rows, "mega2bart", length, beams, dtype)
                for baseline in ("stock", "led"):
                    theirs = find(rows, baseline, length, beams, dtype)
                    if ours and theirs:
                        out.append(
                            {
                                "length": length,
                                "beams": beams,
                                "dtype": dtype,
                                "comparison": f"mega2bart vs {baseline}",
                                "speedup": theirs["total_s"] / ours["total_s"],
                                "per_token_speedup": _div(theirs["per_token_s"], ours["per_token_s"]),
                                "memory_ratio": ours["peak_rss_gb"] / theirs["peak_rss_gb"],
                                "same_tokens": ours["output_sha"] == theirs["output_sha"]
                                if baseline == "stock"
                                else None,
                            }
                        )
    for length in args.train_lengths:
        ours, theirs = find(rows, "train-mega2bart", length), find(rows, "train-led", length)
        if ours and theirs:
            out.append(
                {
                    "length": length,
                    "beams": 0,
                    "dtype": "fp32",
                    "comparison": "train step: mega2bart vs led",
                    "speedup": theirs["step_s"] / ours["step_s"],
                    "per_token_speedup": None,
                    "memory_ratio": ours["peak_rss_gb"] / theirs["peak_rss_gb"],
                    "same_tokens": None,
                }
            )
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def target_rows(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The targets of issue 10 at 16,384 tokens, 4 beams, 64 new tokens, fp32; where that point was not run (e.g.
    --quick), the same ratios at the largest length and beam count measured, shown but not judged."""
    point = dict(TARGET_POINT)
    judged = (
        point["length"] in args.lengths
        and point["beams"] in args.beams
        and args.new_tokens == point["new_tokens"]
        and "fp32" in args.dtypes
        and args.size == "large"
    )
    if not judged:
        point.update(length=max(args.lengths), beams=max(args.beams), new_tokens=args.new_tokens)
    at = f"L={point['length']:,}, {point['beams']} beams, {point['new_tokens']} tokens, fp32, {args.size}"
    ours = find(rows, "mega2bart", point["length"], point["beams"])
    stock = find(rows, "stock", point["length"], point["beams"])
    led = find(rows, "led", point["length"], point["beams"])
    one_beam = find(rows, "mega2bart", point["length"], 1)
    targets = []

    def add(name: str, value: float | None, rule: str, ok: bool) -> None:
        verdict = None if value is None or not judged else ok
        targets.append({"target": f"{name} ({at})", "value": value, "rule": rule, "pass": verdict})

    value = _div(stock and stock["total_s"], ours and ours["total_s"])
    add("speedup vs stock generation", value, ">= 4", value is not None and value >= 4)
    value = _div(led and led["total_s"], ours and ours["total_s"])
    add("speedup vs LED-large", value, ">= 4", value is not None and value >= 4)
    value = _div(ours and ours["peak_rss_gb"], stock and stock["peak_rss_gb"])
    add("peak RSS / stock's", value, "<= 0.5", value is not None and value <= 0.5)
    value = _div(ours and ours["per_token_s"], one_beam and one_beam["per_token_s"]) if point["beams"] != 1 else None
    add(f"time per token, {point['beams']} beams / 1 beam", value, "<= 1.5", value is not None and value <= 1.5)
    return targets


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['started']} ({report['duration_s'] / 60:.1f} min), command: `{report['command']}`",
        "",
        f"Machine: {m.get('Model name', '?')}, {m.get('cpu_count')} CPUs, {m.get('mem_total_gb', 0):.1f} GiB RAM; "
        f"torch {m.get('torch')}, transformers {m.get('transformers')}; threads {report['threads']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}, "
        f"at end {', '.join(f'{x:.2f}' for x in report.get('loadavg_at_end', []))}. Models: size {report['size']}, "
        f"random init, seed {report['seed']}.",
        "",
        "Generation (batch 1; encoder = time inside the encoder module; first token = call start to the first "
        "step's scores; per token = mean time of each later step, all beams; peak RSS = the worker process's peak; "
        "call peak = the measured call alone; other load = cores busy with other processes, above ~0.2 the timings "
        "are disturbed):",
        "",
        "| case | L | beams | new tokens | dtype | encoder s | first token s | per token s | total s | peak RSS GB "
        "| call peak GB | other load | note |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["rows"]:
        if row["case"].startswith("train-"):
            continue
        if row["note"]:
            lines.append(
                f"| {row['case']} | {row['length']:,} | {row['beams']} | | {row['dtype']} "
                + "| " * 7
                + f"| {row['note']} |"
            )
            continue
        note = f"{row['encoder_calls']} encoder calls" if row["encoder_calls"] != 1 else ""
        lines.append(
            f"| {row['case']} | {row['length']:,} | {row['beams']} | {row['steps']} | {row['dtype']} | "
            f"{fmt(row['encoder_s'])} | {fmt(row['first_token_s'])} | {fmt(row['per_token_s'], 3)} | "
            f"{fmt(row['total_s'])} | {fmt(row['peak_rss_gb'])} | {fmt(row['phase_peak_rss_gb'])} | "
            f"{fmt(row['other_load'])} | {note} |"
        )
    train = [row for row in report["rows"] if row["case"].startswith("train-")]
    if train:
        lines += [
            "",
            f"Training step (fp32, forward + backward, gradient checkpointing, {report['label_tokens']} label tokens; "
            "grads = parameters that received a gradient):",
            "",
            "| case | L | step s | peak RSS GB | step peak GB | grads | other load | note |",
            "|---|---:|---:|---:|---:|---|---:|---|",
        ]
        for row in train:
            if row["note"]:
                lines.append(f"| {row['case']} | {row['length']:,} " + "| " * 5 + f"| {row['note']} |")
                continue
            lines.append(
                f"| {row['case']} | {row['length']:,} | {fmt(row['step_s'])} | {fmt(row['peak_rss_gb'])} | "
                f"{fmt(row['phase_peak_rss_gb'])} | {row['grads']} | {fmt(row['other_load'])} | |"
            )
    lines += [
        "",
        "Ratios (speedup = baseline seconds / mega2bart seconds; memory = mega2bart peak RSS / baseline peak RSS; "
        "same tokens = mega2bart's output equals stock's):",
        "",
        "| L | beams | dtype | comparison | speedup | per-token speedup | memory | same tokens |",
        "|---:|---:|---|---|---:|---:|---:|---|",
    ]
    for row in report["ratios"]:
        same = {True: "yes", False: "NO", None: "–"}[row["same_tokens"]]
        lines.append(
            f"| {row['length']:,} | {row['beams'] or '–'} | {row['dtype']} | {row['comparison']} | "
            f"{row['speedup']:.2f}x | {fmt(row['per_token_speedup'])}{'x' if row['per_token_speedup'] else ''} | "
            f"{row['memory_ratio']:.2f}x | {same} |"
        )
    lines += ["", "Targets (issue 10):", "", "| target | value | rule | result |", "|---|---:|---|---|"]
    for row in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "not measured" if row["value"] is None else "not judged"}[
            row["pass"]
        ]
        lines.append(f"| {row['target']} | {fmt(row['value'])} | {row['rule']} | {verdict} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 4096,16384, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _choice_list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x for x in text.split(",") if x]
        bad = [x for x in items if x not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {bad or text!r}: choose from {','.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=_int_list, default=[4096, 16384], help="input tokens (4096,16384)")
    parser.add_argument("--beams", type=_int_list, default=[1, 4], help="beam counts (1,4)")
    parser.add_argument("--new-tokens", type=int, default=64, help="new tokens per generation, forced (64)")
    parser.add_argument("--cases", type=_choice_list(CASES), default=list(CASES), help=",".join(CASES))
    parser.add_argument("--dtypes", type=_choice_list(DTYPE_NAMES), default=["fp32"], help="fp32 (default),bf16")
    parser.add_argument("--size", choices=SIZES, default="large", help="model shapes: large (default), base, tiny")
    parser.add_argument("--train-lengths", type=_int_list, default=[16384], help="input tokens of the training step")
    parser.add_argument("--label-tokens", type=int, default=512, help="label tokens of the training step (512)")
    parser.add_argument("--repeats", type=int, default=1, help="measured calls per case (median; after a warm-up)")
    parser.add_argument("--warmup-tokens", type=int, default=256, help="input tokens of the warm-up call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights (same for mega2bart and stock)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads in workers")
    parser.add_argument("--timeout", type=float, default=7200.0, help="seconds before a worker is killed")
    parser.add_argument(
        "--mem-limit-gb",
        type=float,
        default=default_mem_limit_gb(),
        help="RSS at which a worker is killed (default: MemAvailable at start - 1 GB)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: tiny models, 1,024 tokens, 8 new tokens, 32 label tokens"
    )
    parser.add_argument(
        "--targets-only",
        action="store_true",
        help="only the rows the targets need: the baselines at the most beams, mega2bart at every count",
    )
    parser.add_argument("--json", type=Path, help="write everything (raw results, rows, ratios, targets) here")
    parser.add_argument("--markdown", type=Path, help="write the markdown tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.lengths, args.train_lengths = "tiny", [1024], [1024]
        args.new_tokens, args.label_tokens, args.warmup_tokens = 8, 32, 128
    if args.new_tokens < 2 or args.label_tokens < 3 or args.repeats < 1:
        parser.error(
            "--new-tokens must be >= 2 (one step to time after the first), --label-tokens >= 3, --repeats >= 1"
        )
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    command = shlex.join([Path(sys.executable).name, *(_relative(a) if a.endswith(".py") else a for a in sys.argv)])
    machine = machine_info(None)
    print(f"# bench_generate: {machine.get('Model name')}, {args.threads} threads, load {machine['loadavg_at_start']}")
    jobs = plan_jobs(args)
    records = []
    for index, job in enumerate(jobs, 1):
        record = run_job(job, args)
        prefix = f"[{index}/{len(jobs)}] {job.label()}"
        res = record.get("result")
        if res is None:
            print(f"{prefix}: FAILED ({record['error']})", flush=True)
        elif job.task == "train":
            print(
                f"{prefix}: step {res['step_s']:.2f} s, peak RSS {res['peak_rss_gb']:.2f} GB, "
                f"wall {record['wall_s']:.0f} s",
                flush=True,
            )
        else:
            print(
                f"{prefix}: encoder {res['encoder_s']:.2f} s, first token {res['first_token_s']:.2f} s, "
                f"per token {res['per_token_s']:.3f} s, total {res['total_s']:.2f} s, peak RSS "
                f"{res['peak_rss_gb']:.2f} GB, wall {record['wall_s']:.0f} s",
                flush=True,
            )
        records.append(record)
    rows = result_rows(records)
    report = {
        "started": started,
        "duration_s": time.perf_counter() - t0,
        "command": command,
        "threads": args.threads,
        "size": args.size,
        "seed": args.seed,
        "lengths": args.lengths,
        "beams": args.beams,
        "new_tokens": args.new_tokens,
        "label_tokens": args.label_tokens,
        "machine": machine,
        "loadavg_at_end": os.getloadavg(),
        "rows": rows,
        "ratios": ratio_rows(rows, args),
        "targets": target_rows(rows, args),
        "records": records,
    }
    write_report(report, markdown(report), args.markdown, args.json)
    return report


if __name__ == "__main__":
    main()
