"""Speed and memory of the native MEGA encoder against the transformers 4.57.1 port and LED-base's encoder.

A benchmark, not a test: it prints tables (seconds, tokens/s, peak RSS, achieved FLOP/s as a fraction of a
matmul peak measured in the same run) and ratios against the baselines, and checks the targets of issue 3.
Every measurement runs in a fresh subprocess (`_worker.py`), so each peak RSS is that run's own peak.

    .venv/bin/python benchmarks/bench_encoder.py --quick                      # smoke test, 1,024 tokens
    .venv/bin/python benchmarks/bench_encoder.py --json bench.json --markdown bench.md   # the full run

Models (batch 1, random init, dropouts 0):
- native: mega2bart's MegaModel (no pooler) with the seed configuration of docs/mega.md#seed-configuration;
- port:   transformers 4.57.1's deprecated MegaModel, same configuration, run with --port-python. In eval mode
          it caches its EMA kernel, so its first call (kernel rebuilt, as in training and for every new length)
          and its cached calls are reported as two rows;
- led:    transformers 5's LEDEncoder configured like allenai/led-base-16384 (built from the config, no Hub);
- compiled: the native model under torch.compile(fullgraph=True) at the job's fixed length; its first call
          compiles, and the compile time (first call minus steady median) is reported separately.

Modes: infer (eval, inference_mode, forward only), train (forward + backward of last_hidden_state.sum()),
train-ckpt (train with gradient checkpointing; the port has none).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "_worker.py"
sys.path.insert(0, str(HERE))
from _harness import default_mem_limit_gb, fmt, machine_info, run_worker, worker_env, write_report  # noqa: E402
from _worker import LED_BASE_CONFIG, SEED_MEGA_CONFIG  # noqa: E402


def reference_python() -> Path:
    """The reference environment's python, where scripts/reference_env.sh creates it (same rule)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    venv = Path(os.environ.get("MEGA2BART_REFERENCE_VENV") or cache / "mega2bart" / "venv-transformers-4.57.1")
    return venv / "bin" / "python"


DEFAULT_PORT_PYTHON = str(reference_python())
REFERENCE_PYTHON_SHOWN = '"$(bash scripts/reference_env.sh)"'


def shown_path(path: str) -> str:
    """`path` as results record it: repository-relative, the reference python as the command that prints
    it, anything else by its name only; so no results file carries the paths of the machine that made it."""
    if path == DEFAULT_PORT_PYTHON:
        return REFERENCE_PYTHON_SHOWN
    try:
        return Path(path).relative_to(REPO).as_posix()
    except ValueError:
        return Path(path).name


MODES = ("infer", "train", "train-ckpt")
DTYPE_NAMES = ("fp32", "bf16")

# ------------------------------------------------------------------------------------------------
# FLOP counts (analytic; checked against FlopCounterMode at 1,024 tokens in every run)
# ------------------------------------------------------------------------------------------------


def padded_length(length: int, multiple: int) -> int:
    """Length actually computed: MEGA pads above chunk_size to a multiple of it, LED pads to its window."""
    if length <= multiple:
        return length
    return -(-length // multiple) * multiple


def mega_forward_flops(length: int, cfg: dict[str, Any] = SEED_MEGA_CONFIG) -> dict[str, float]:
    """Matmul FLOPs (2 per multiply-add) of one MEGA encoder forward, batch 1, split by kind.

    Per layer, with L the padded length, C = min(L, chunk_size), D = 2H (bidirectional) and K = L:
      projections  2 L (H E  +  H (2H + Z + E)  +  E H  +  H F  +  F H)     v, mx, h, fc1, fc2
      attention    2 (L / C) C^2 (Z + E)                                     Q K^T and A V per chunk
      ema_kernel   2 D N K                                                   sum_n over the Vandermonde (bmm/einsum)
    The FFT convolution is not a matmul and is reported separately (`mega_fft_flops`).
    """
    hidden, z_dim = cfg["hidden_size"], cfg["shared_representation_size"]
    e_dim, f_dim, n_dim = cfg["intermediate_size"], cfg["nffn_hidden_size"], cfg["ema_projection_size"]
    layers = cfg["num_hidden_layers"]
    rows = 2 * hidden if cfg["bidirectional"] else hidden
    seq = padded_length(length, cfg["chunk_size"]) if cfg["use_chunking"] else length
    chunk = min(seq, cfg["chunk_size"]) if cfg["use_chunking"] else seq
    mx_width = 2 * hidden + z_dim + e_dim  # [u | z | r | hx]
    projections = 2 * seq * (hidden * e_dim + hidden * mx_width + e_dim * hidden + 2 * hidden * f_dim)
    attention = 2 * (seq // chunk) * chunk * chunk * (z_dim + e_dim)
    ema_kernel = 2 * rows * n_dim * seq
    out = {
        "projections": float(layers * projections),
        "attention": float(layers * attention),
        "ema_kernel": float(layers * ema_kernel),
    }
    out["total"] = sum(out.values())
    return out


def fast_fft_length(minimum: int) -> int:
    """The native model's FFT size rule (smallest 2^a 3^b 5^c >= minimum)."""
    from mega2bart.models.mega.modeling_mega import _fast_fft_length

    return _fast_fft_length(minimum)


def mega_fft_flops(length: int, impl: str, cfg: dict[str, Any] = SEED_MEGA_CONFIG) -> float:
    """FFT FLOPs of one forward: per layer 3 real transforms (rfft of input and kernel, irfft) of H channels,
    each counted as 2.5 n log2 n (half the usual 5 n log2 n of a complex FFT). n is 2^a3^b5^c >= 2L - 1 in the
    native model and 4L - 2 in the port."""
    seq = padded_length(length, cfg["chunk_size"]) if cfg["use_chunking"] else length
    n = fast_fft_length(2 * seq - 1) if impl == "native" else 4 * seq - 2
    return float(cfg["num_hidden_layers"] * 3 * cfg["hidden_size"] * 2.5 * n * math.log2(n))


def led_forward_flops(length: int, cfg: dict[str, Any] = LED_BASE_CONFIG) -> dict[str, float]:
    """Matmul FLOPs LED's encoder executes in one forward, batch 1 (no global attention).

    Per layer, with L padded to a multiple of the window W = attention_window and w = W / 2 (one side):
      projections  2 L (4 d^2 + 2 d F)                                  q, k, v, out, fc1, fc2
      attention    2 (L/w - 1) (2w)^2 d  +  2 (L/w) w (3w) d             Longformer's overlapping chunks
    The chunked sliding window computes more scores than the 2w + 1 it keeps; this counts what runs.
    """
    d, f_dim, layers = cfg["d_model"], cfg["encoder_ffn_dim"], cfg["encoder_layers"]
    window = cfg["attention_window"][0]
    w = window // 2
    seq = -(-length // window) * window
    projections = 2 * seq * (4 * d * d + 2 * d * f_dim)
    attention = 2 * (seq // w - 1) * (2 * w) ** 2 * d + 2 * (seq // w) * w * 3 * w * d
    out = {"projections": float(layers * projections), "attention": float(layers * attention), "ema_kernel": 0.0}
    out["total"] = out["projections"] + out["attention"]
    return out


def forward_flops(impl: str, length: int) -> float:  # "compiled" is the native model: MEGA FLOPs
    return led_forward_flops(length)["total"] if impl == "led" else mega_forward_flops(length)["total"]


def step_flops(impl: str, length: int, mode: str) -> float:
    """Model FLOPs of one call: forward F for infer; 3F (forward + backward = 2F) for a training step.
    Gradient checkpointing recomputes the forward (4F of work) but is credited 3F, as in the usual MFU."""
    return forward_flops(impl, length) * (1 if mode == "infer" else 3)


# ------------------------------------------------------------------------------------------------
# running jobs
# ------------------------------------------------------------------------------------------------


@dataclass
class Job:
    impl: str  # native | port | led | matmul | flops
    length: int = 0
    mode: str = ""
    dtype: str = ""
    repeats: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    skip: str | None = None  # reason, when the job is deliberately not run

    @property
    def key(self) -> str:
        return f"{self.impl}/{self.length}/{self.mode}/{self.dtype}"

    def label(self) -> str:
        if self.impl == "matmul":
            return f"matmul peak ({self.extra.get('when', '')})"
        if self.impl == "flops":
            return f"FLOP count {self.extra['model']} L={self.length}"
        return f"{self.impl} L={self.length} {self.mode} {self.dtype}"


def run_job(job: Job, args: argparse.Namespace) -> dict[str, Any]:
    """Run one job in a fresh subprocess; kill it past --timeout or past --mem-limit-gb of RSS."""
    spec = {"impl": job.impl, "threads": args.threads, "seed": 0, **job.extra}
    if job.impl in ("native", "port", "led", "compiled", "flops"):
        spec.update(length=job.length, mode=job.mode, dtype=job.dtype, repeats=job.repeats)
    python = args.port_python if job.impl == "port" else sys.executable
    command = [python, str(WORKER), json.dumps(spec)]
    env = worker_env(args.threads, PYTHONUNBUFFERED="1")
    run = run_worker(command, env=env, cwd=REPO, timeout=args.timeout, mem_limit_gb=args.mem_limit_gb)
    record: dict[str, Any] = {
        "job": asdict(job),
        "key": job.key,
        "wall_s": run.wall_s,
        "other_load": run.other_load,
        "command": " ".join([shown_path(python), shown_path(str(WORKER)), shlex.quote(command[2])]),
        **run.outcome(),
    }
    if "result" in record:
        record["result"]["python"] = shown_path(record["result"].get("python", python))
    return record


def plan_jobs(args: argparse.Namespace) -> list[Job]:
    jobs: list[Job] = []
    for length in args.lengths:
        repeats = args.long_repeats if length >= args.long_from else args.repeats
        for mode in args.modes:
            for dtype in args.dtypes:
                too_long = (
                    "activations without checkpointing grow ~1.4-1.8 GB per 1,024 tokens (measured at "
                    "1,024), i.e. > 20 GB here; raise --train-max-length to try, or see train-ckpt"
                    if mode == "train" and length > args.train_max_length
                    else None
                )
                if not args.skip_native:
                    jobs.append(Job("native", length, mode, dtype, repeats, skip=too_long))
                if not args.skip_compiled and dtype in args.compiled_dtypes and mode in args.compiled_modes:
                    jobs.append(Job("compiled", length, mode, dtype, max(repeats, 1), skip=too_long))
                if not args.skip_port and dtype in args.baseline_dtypes:
                    job = Job("port", length, mode, dtype, repeats)
                    if mode == "train-ckpt":
                        job.skip = "the 4.57.1 port has no gradient checkpointing"
                    elif mode == "train" and length > args.port_train_max_length:
                        job.skip = (
                            f"infeasible: its EMA kernel keeps ~4.5 GiB per 1,024 tokens for backward "
                            f"(~{4.5 * length / 1024:.0f} GiB here; docs/mega.md#memory); "
                            "raise --port-train-max-length to try"
                        )
                    jobs.append(job)
                if not args.skip_led and dtype in args.baseline_dtypes and mode in args.led_modes:
                    jobs.append(Job("led", length, mode, dtype, repeats, skip=too_long))
    return jobs


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------


def result_rows(records: list[dict[str, Any]], peaks: dict[str, float]) -> list[dict[str, Any]]:
    """One row per measured configuration; the port's inference gives two (first call, cached)."""
    rows = []
    for record in records:
        job = record["job"]
        if job["impl"] not in ("native", "port", "led", "compiled"):
            continue
        base = {k: job[k] for k in ("impl", "length", "mode", "dtype")}
        if job["skip"] or "error" in record:
            rows.append({**base, "variant": "", "note": job["skip"] or record["error"]})
            continue
        res = record["result"]
        variants: list[tuple[str, float | None, float | None]] = []
        if job["impl"] == "port" and job["mode"] == "infer":
            variants.append(("first call", res["first_s"], res["peak_rss_gb"]))
            cached_peak = res["steady_peak_rss_gb"] if res["steady_peak_rss_gb"] is not None else res["peak_rss_gb"]
            variants.append(("cached", res["steady_s"], cached_peak))
        else:
            seconds = res["steady_s"] if res["steady_s"] is not None else res["first_s"]
            variants.append(("", seconds, res["peak_rss_gb"]))
        flops = step_flops(job["impl"], job["length"], job["mode"])
        peak = peaks.get(job["dtype"])
        for variant, seconds, peak_rss in variants:
            if seconds is None:
                rows.append({**base, "variant": variant, "note": "no steady repeat (--repeats 0)"})
                continue
            gflops = flops / seconds / 1e9
            rows.append(
                {
                    **base,
                    "variant": variant,
                    "seconds": seconds,
                    "first_s": res["first_s"],
                    "repeats": len(res["steady_all_s"]),
                    "tokens_per_s": job["length"] / seconds,
                    "peak_rss_gb": peak_rss,
                    "model_rss_gb": res["rss_model_gb"],
                    "gflops": gflops,
                    "pct_of_peak": 100.0 * gflops / peak if peak else None,
                    "grads": (
                        f"{res['params_with_grad']}/{res['params_trainable']}" if "params_with_grad" in res else ""
                    ),
                    "other_load": record["other_load"],
                    "note": f"compile {res['compile_s']:.0f} s" if "compile_s" in res else "",
                }
            )
    return rows


def find(rows: list[dict[str, Any]], impl: str, length: int, mode: str, dtype: str, variant: str = "") -> dict | None:
    for row in rows:
        if (row["impl"], row["length"], row["mode"], row["dtype"], row["variant"]) == (
            impl,
            length,
            mode,
            dtype,
            variant,
        ) and "seconds" in row:
            return row
    return None


# (label, (impl, mode, dtype, variant) of the native side, (...) of the baseline side)
COMPARISONS = [
    ("native infer vs port first call", ("native", "infer", "fp32", ""), ("port", "infer", "fp32", "first call")),
    ("native infer vs port cached", ("native", "infer", "fp32", ""), ("port", "infer", "fp32", "cached")),
    ("native infer vs LED-base encoder", ("native", "infer", "fp32", ""), ("led", "infer", "fp32", "")),
    ("native train vs port train", ("native", "train", "fp32", ""), ("port", "train", "fp32", "")),
    ("native train-ckpt vs port train", ("native", "train-ckpt", "fp32", ""), ("port", "train", "fp32", "")),
    ("native train vs LED train", ("native", "train", "fp32", ""), ("led", "train", "fp32", "")),
    ("native train-ckpt vs LED train-ckpt", ("native", "train-ckpt", "fp32", ""), ("led", "train-ckpt", "fp32", "")),
    ("native bf16 infer vs native fp32 infer", ("native", "infer", "bf16", ""), ("native", "infer", "fp32", "")),
    ("native bf16 train vs native fp32 train", ("native", "train", "bf16", ""), ("native", "train", "fp32", "")),
    ("native train-ckpt vs native train", ("native", "train-ckpt", "fp32", ""), ("native", "train", "fp32", "")),
    ("compiled infer vs native infer", ("compiled", "infer", "fp32", ""), ("native", "infer", "fp32", "")),
    ("compiled train vs native train", ("compiled", "train", "fp32", ""), ("native", "train", "fp32", "")),
    ("compiled infer vs LED-base encoder", ("compiled", "infer", "fp32", ""), ("led", "infer", "fp32", "")),
    ("compiled train vs LED train", ("compiled", "train", "fp32", ""), ("led", "train", "fp32", "")),
]


def ratio_rows(rows: list[dict[str, Any]], lengths: list[int]) -> list[dict[str, Any]]:
    """speedup = baseline seconds / native seconds (> 1: native faster); memory = native peak / baseline peak."""
    out = []
    for length in lengths:
        for label, ours, theirs in COMPARISONS:
            a = find(rows, ours[0], length, ours[1], ours[2], ours[3])
            b = find(rows, theirs[0], length, theirs[1], theirs[2], theirs[3])
            if a and b:
                out.append(
                    {
                        "length": length,
                        "comparison": label,
                        "speedup": b["seconds"] / a["seconds"],
                        "memory_ratio": a["peak_rss_gb"] / b["peak_rss_gb"],
                    }
                )
    return out


def target_rows(rows: list[dict[str, Any]], machine: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets of issue 3, each evaluated on this run's rows (or 'not measured')."""

    def get(*key: Any) -> dict | None:
        return find(rows, *key)

    targets = []

    def add(name: str, value: float | None, rule: str, ok: bool | None, note: str = "") -> None:
        targets.append({"target": name, "value": value, "rule": rule, "pass": ok, "note": note})

    def ratio(a: dict | None, b: dict | None, field: str, invert: bool = False) -> float | None:
        if not (a and b):
            return None
        return (a[field] / b[field]) if invert else (b[field] / a[field])

    big, small = 16384, 1024
    nat = get("native", big, "infer", "fp32")
    first, cached = get("port", big, "infer", "fp32", "first call"), get("port", big, "infer", "fp32", "cached")
    led = get("led", big, "infer", "fp32")
    value = ratio(nat, first, "seconds")
    add("16k fp32 infer: speedup vs port first call", value, ">= 4", None if value is None else value >= 4)
    value = ratio(nat, cached, "seconds")
    add("16k fp32 infer: speedup vs port cached call", value, ">= 1", None if value is None else value >= 1)
    value = ratio(nat, first, "peak_rss_gb", invert=True)
    add("16k fp32 infer: peak RSS / port's (first call)", value, "<= 0.4", None if value is None else value <= 0.4)
    value = ratio(nat, led, "seconds")
    add("16k fp32 infer: speedup vs LED-base encoder", value, ">= 1.5", None if value is None else value >= 1.5)
    ckpt = get("native", big, "train-ckpt", "fp32")
    value = ckpt["peak_rss_gb"] if ckpt else None
    add("16k fp32 train step (grad ckpt): peak RSS GB", value, "< 8", None if value is None else value < 8)
    train, port_train = get("native", small, "train", "fp32"), get("port", small, "train", "fp32")
    value = ratio(train, port_train, "seconds")
    add("1k fp32 train step: speedup vs port", value, ">= 3", None if value is None else value >= 3)
    value = ratio(train, port_train, "peak_rss_gb", invert=True)
    add("1k fp32 train step: peak RSS / port's", value, "<= 0.4", None if value is None else value <= 0.4)
    bf16 = get("native", big, "infer", "bf16")
    value = ratio(bf16, nat, "seconds")
    hw = machine.get("bf16_matmul_hw")
    add(
        "16k infer: bf16 speedup vs fp32",
        value,
        ">= 2 (if bf16 matmul hw)",
        None if value is None else (value >= 2 if hw else None),
        f"bf16 matmul hardware: {hw} ({', '.join(machine.get('cpu_bf16_flags', []))})",
    )
    value = nat["pct_of_peak"] if nat else None
    add("16k fp32 infer: % of measured fp32 matmul peak", value, ">= 60", None if value is None else value >= 60)
    compiled = get("compiled", big, "infer", "fp32")
    value = compiled["pct_of_peak"] if compiled else None
    add("16k fp32 infer compiled: % of fp32 matmul peak", value, ">= 60", None if value is None else value >= 60)
    value = ratio(compiled, led, "seconds")
    add("16k fp32 infer compiled: speedup vs LED-base", value, ">= 1.5", None if value is None else value >= 1.5)
    return targets


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['started']} ({report['duration_s'] / 60:.1f} min), command: `{report['command']}`",
        "",
        f"Machine: {m.get('Model name', '?')}, {m.get('cpu_count')} CPUs, {m.get('mem_total_gb', 0):.1f} GiB RAM; "
        f"torch {m.get('torch')}, transformers {m.get('transformers')} (port: {m.get('port_versions', '–')}); "
        f"threads {report['threads']}; bf16 matmul hardware: {m.get('bf16_matmul_hw')} "
        f"(flags {', '.join(m.get('cpu_bf16_flags', [])) or 'none'}; mkldnn bf16 {m.get('mkldnn_bf16_supported')}); "
        f"load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}, "
        f"at end {', '.join(f'{x:.2f}' for x in report.get('loadavg_at_end', []))}.",
        "",
        "Matmul peak (square torch.mm, best of repeats, GFLOP/s): "
        + "; ".join(
            f"{probe['when']} {probe.get('size', '?')}²: "
            + ", ".join(f"{d} {probe[d]['best_gflops']:.0f}" for d in DTYPE_NAMES if d in probe)
            for probe in report["matmul"]
        )
        + f". Used as peak: {', '.join(f'{d} {v:.0f}' for d, v in report['peaks'].items())}.",
        "",
    ]
    if report["flop_check"]:
        lines.append("FLOP formula check (one fp32 forward, FlopCounterMode vs analytic matmul FLOPs):")
        lines.append("")
        for check in report["flop_check"]:
            if "error" in check:
                lines.append(f"- {check['model']} L={check['length']}: {check['error']}")
            else:
                lines.append(
                    f"- {check['model']} L={check['length']}: counted {check['counted'] / 1e9:.2f} GFLOP, "
                    f"analytic {check['analytic'] / 1e9:.2f} GFLOP (ratio {check['counted'] / check['analytic']:.4f})"
                )
        lines.append("")
    lines.append("Analytic forward FLOPs per length (matmul; FFT separately, not counted in GFLOP/s):")
    lines.append("")
    lines.append("| L | MEGA projections | attention | EMA kernel | MEGA total | FFT native | FFT port | LED total |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for length in report["lengths"]:
        f = mega_forward_flops(length)
        lines.append(
            f"| {length:,} | {f['projections'] / 1e12:.3f} T | {f['attention'] / 1e12:.3f} T | "
            f"{f['ema_kernel'] / 1e12:.4f} T | {f['total'] / 1e12:.3f} T | "
            f"{mega_fft_flops(length, 'native') / 1e9:.1f} G | "
            f"{mega_fft_flops(length, 'port') / 1e9:.1f} G | {led_forward_flops(length)['total'] / 1e12:.3f} T |"
        )
    lines += [
        "",
        "Results (seconds = median of the steady repeats after a first call, or the first call when there are none;"
        " peak RSS = the process's ru_maxrss, except the port's cached row: peak of the cached calls alone;"
        " GFLOP/s = model matmul FLOPs (train: 3x forward) / seconds; % = of the same-dtype matmul peak;"
        " grads = parameters that received a gradient; other load = cores busy with other processes during the"
        " run, from /proc/stat: above ~0.2 the timings are disturbed):",
        "",
        "| impl | L | mode | dtype | seconds | first call s | tokens/s | peak RSS GB | model RSS GB | GFLOP/s "
        "| % peak | grads | other load | note |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in report["rows"]:
        name = row["impl"] + (f" ({row['variant']})" if row["variant"] else "")
        if "seconds" not in row:
            blanks = "| " * 9  # the 9 empty measurement cells
            lines.append(f"| {name} | {row['length']:,} | {row['mode']} | {row['dtype']} {blanks}| {row['note']} |")
            continue
        lines.append(
            f"| {name} | {row['length']:,} | {row['mode']} | {row['dtype']} | {fmt(row['seconds'])} | "
            f"{fmt(row['first_s'])} | {fmt(row['tokens_per_s'], 0)} | {fmt(row['peak_rss_gb'])} | "
            f"{fmt(row['model_rss_gb'])} | {fmt(row['gflops'], 1)} | {fmt(row['pct_of_peak'], 1)} | "
            f"{row['grads']} | {fmt(row['other_load'])} | {row['note']} |"
        )
    lines += [
        "",
        "Ratios (speedup = baseline seconds / native seconds; memory = native peak RSS / baseline peak RSS):",
        "",
        "| L | comparison | speedup | memory |",
        "|---:|---|---:|---:|",
    ]
    for row in report["ratios"]:
        lines.append(
            f"| {row['length']:,} | {row['comparison']} | {row['speedup']:.2f}x | {row['memory_ratio']:.2f}x |"
        )
    lines += ["", "Targets (issue 3):", "", "| target | value | rule | result |", "|---|---:|---|---|"]
    for row in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "not measured" if row["value"] is None else "n/a"}[row["pass"]]
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"| {row['target']} | {fmt(row['value'])} | {row['rule']} | {verdict}{note} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1024,4096, got {text!r}") from exc


def _choice_list(choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        items = [x for x in text.split(",") if x]
        bad = [x for x in items if x not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}: choose from {','.join(choices)}")
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=_int_list, default=[1024, 4096, 16384], help="sequence lengths")
    parser.add_argument("--modes", type=_choice_list(MODES), default=list(MODES), help="infer,train,train-ckpt")
    parser.add_argument("--dtypes", type=_choice_list(DTYPE_NAMES), default=list(DTYPE_NAMES), help="fp32,bf16")
    parser.add_argument(
        "--baseline-dtypes", type=_choice_list(DTYPE_NAMES), default=["fp32"], help="dtypes run for port and LED"
    )
    parser.add_argument(
        "--led-modes", type=_choice_list(MODES), default=list(MODES), help="modes run for LED (within --modes)"
    )
    parser.add_argument("--skip-port", action="store_true", help="no transformers 4.57.1 port baseline")
    parser.add_argument("--skip-led", action="store_true", help="no LED-base baseline")
    parser.add_argument("--skip-native", action="store_true", help="baselines only")
    parser.add_argument("--skip-compiled", action="store_true", help="no torch.compile rows")
    parser.add_argument(
        "--compiled-modes", type=_choice_list(MODES), default=["infer", "train"], help="modes of the compiled rows"
    )
    parser.add_argument(
        "--compiled-dtypes", type=_choice_list(DTYPE_NAMES), default=["fp32"], help="dtypes of the compiled rows"
    )
    parser.add_argument("--repeats", type=int, default=3, help="steady repeats after the first call (median)")
    parser.add_argument("--long-repeats", type=int, default=1, help="steady repeats at lengths >= --long-from")
    parser.add_argument("--long-from", type=int, default=16384, help="length from which --long-repeats applies")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads in workers")
    parser.add_argument(
        "--port-python",
        default=DEFAULT_PORT_PYTHON,
        help="python of the transformers 4.57.1 venv (default: where scripts/reference_env.sh creates it)",
    )
    parser.add_argument(
        "--port-train-max-length", type=int, default=1024, help="longest length for the port's training step"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a worker is killed")
    parser.add_argument(
        "--mem-limit-gb",
        type=float,
        default=default_mem_limit_gb(),
        help="RSS at which a worker is killed (default: MemAvailable at start - 1 GB)",
    )
    parser.add_argument(
        "--train-max-length",
        type=int,
        default=4096,
        help="longest length for training without checkpointing (native, LED); longer ones need > 20 GB",
    )
    parser.add_argument("--matmul-size", type=int, default=4096, help="side of the square matmul peak probe")
    parser.add_argument("--no-flop-check", action="store_true", help="skip the FlopCounterMode check at 1,024")
    parser.add_argument("--quick", action="store_true", help="smoke test: lengths 1024, 1 repeat, matmul 2048")
    parser.add_argument("--json", type=Path, help="write everything (raw results, rows, ratios, targets) here")
    parser.add_argument("--markdown", type=Path, help="write the markdown tables here")
    args = parser.parse_args(argv)
    if args.quick:
        args.lengths, args.repeats, args.matmul_size = [1024], 1, 2048
    if args.skip_port:
        args.port_python = None
    elif not Path(args.port_python).exists():
        parser.error(
            f"--port-python {args.port_python} does not exist: create the reference environment with "
            "`bash scripts/reference_env.sh`, pass its python, or pass --skip-port"
        )
    if args.repeats < 0 or args.long_repeats < 0:
        parser.error("--repeats and --long-repeats must be >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    machine = machine_info(args.port_python)
    print(f"# bench_encoder: {machine.get('Model name')}, {args.threads} threads, load {machine['loadavg_at_start']}")

    def log(index: int, total: int, job: Job, record: dict[str, Any]) -> None:
        prefix = f"[{index}/{total}] {job.label()}"
        if job.skip:
            print(f"{prefix}: skipped ({job.skip})", flush=True)
        elif "error" in record:
            print(f"{prefix}: FAILED ({record['error']})", flush=True)
        elif job.impl in ("native", "port", "led", "compiled"):
            res = record["result"]
            steady = f", steady {res['steady_s']:.2f} s" if res["steady_s"] is not None else ""
            steady += f" (compile {res['compile_s']:.0f} s)" if "compile_s" in res else ""
            print(
                f"{prefix}: first {res['first_s']:.2f} s{steady}, peak RSS {res['peak_rss_gb']:.2f} GB "
                f"(model {res['rss_model_gb']:.2f} GB), wall {record['wall_s']:.0f} s, "
                f"other load {record['other_load']:.2f}",
                flush=True,
            )
        else:
            print(f"{prefix}: done in {record['wall_s']:.0f} s, other load {record['other_load']:.2f}", flush=True)

    def matmul_job(when: str) -> Job:
        dtypes = sorted(set(args.dtypes) | set(args.baseline_dtypes), key=DTYPE_NAMES.index)
        return Job("matmul", extra={"size": args.matmul_size, "dtypes": dtypes, "when": when})

    jobs = [matmul_job("start")]
    if not args.no_flop_check:
        jobs.append(Job("flops", 1024, "infer", "fp32", extra={"model": "native"}))
        if not args.skip_led:
            jobs.append(Job("flops", 1024, "infer", "fp32", extra={"model": "led"}))
    jobs += plan_jobs(args)
    jobs.append(matmul_job("end"))

    records = []
    for index, job in enumerate(jobs, 1):
        record = {"job": asdict(job), "key": job.key} if job.skip else run_job(job, args)
        log(index, len(jobs), job, record)
        records.append(record)

    matmul = []
    for record in records:
        if record["job"]["impl"] == "matmul" and "result" in record:
            matmul.append({"when": record["job"]["extra"]["when"], **record["result"]})
    peaks = {
        d: max(probe[d]["best_gflops"] for probe in matmul if d in probe)
        for d in DTYPE_NAMES
        if any(d in probe for probe in matmul)
    }
    flop_check = []
    for record in records:
        if record["job"]["impl"] != "flops":
            continue
        model, length = record["job"]["extra"]["model"], record["job"]["length"]
        entry: dict[str, Any] = {"model": model, "length": length, "analytic": forward_flops(model, length)}
        if "result" in record:
            entry.update(counted=record["result"]["counted_flops"], by_op=record["result"]["by_op"])
        else:
            entry["error"] = record["error"]
        flop_check.append(entry)

    rows = result_rows(records, peaks)
    report = {
        "started": started,
        "duration_s": time.perf_counter() - t0,
        "command": command,
        "threads": args.threads,
        "lengths": args.lengths,
        "machine": machine,
        "loadavg_at_end": os.getloadavg(),
        "matmul": matmul,
        "peaks": peaks,
        "flop_check": flop_check,
        "rows": rows,
        "ratios": ratio_rows(rows, args.lengths),
        "targets": target_rows(rows, machine),
        "records": records,
    }
    write_report(report, markdown(report), args.markdown, args.json)
    return report


if __name__ == "__main__":
    main()
