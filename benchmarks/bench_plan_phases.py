"""Where a generation row's time goes, against the plan's time model, phase by phase (issue 33).

    python benchmarks/bench_plan_phases.py --only t4,h1,t7,h8,c1,c2 --threads 2 --raw benchmarks/results_plan_phases.jsonl

For each bench_plan generation row (same presets, saved models, inputs and `generate` call as `_plan_worker.py`),
a fresh process loads the model and runs `generate` twice with timers around the encoder's forward and every
decoder forward: the encoder, the first decoder call (which also projects the encoder output into every
layer's cross-attention keys and values), the other decoder calls, and the rest (the generation loop itself:
logits processors, beam bookkeeping, cache reordering). The same process then measures the matmul rate as
`mega2bart plan` does (the dtype's matmul rate and the model's measured efficiency) and splits the plan's seconds
the same way: the encoder and source projections at the measured rate, the decoding steps at the few-row rate,
and STEP_SECONDS per step.
The first call is what bench_plan times; the second shows what of it is a first call's warm-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from _harness import RESULT_PREFIX, machine_summary, run_worker  # noqa: E402


def worker(spec: dict) -> None:
    import torch
    from _plan_worker import generate, inputs, load
    from bench_plan import workload

    import mega2bart.cli  # noqa: F401 (what every command has imported when it starts)
    from mega2bart.plan import load_shape
    from mega2bart.plan.allocator import keep_rss_near_live
    from mega2bart.plan.timing import (
        STEP_SECONDS,
        decoder_token_flops,
        encoder_forward_flops,
        measure_workload_rate,
        seconds_per_flop,
        source_projection_flops,
    )

    keep_rss_near_live()
    torch.set_num_threads(spec["threads"])
    bf16 = spec["dtype"] == "bf16"
    model = load(spec, torch.bfloat16 if bf16 else torch.float32).eval()
    ids, mask = inputs(spec, model.config.encoder.vocab_size)

    calls: dict[str, list[float]] = {"encoder": [], "decoder": []}

    def timed(module: torch.nn.Module, name: str) -> None:
        forward = module.forward

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            calls[name].append(time.perf_counter() - start)
            return out

        module.forward = wrapper

    timed(model.encoder, "encoder")
    timed(model.decoder, "decoder")
    phases = []
    for _ in range(2):
        calls["encoder"].clear()
        calls["decoder"].clear()
        start = time.perf_counter()
        with torch.inference_mode():
            generate(model, spec, ids, mask)
        total = time.perf_counter() - start
        encoder, decoder = sum(calls["encoder"]), calls["decoder"]
        phases.append(
            {
                "total": total,
                "encoder": encoder,
                "first_decoder_call": decoder[0],
                "other_decoder_calls": sum(decoder[1:]),
                "decoder_calls": len(decoder),
                "loop": total - encoder - sum(decoder),
            }
        )

    shape, w = load_shape(spec["size"]), workload(spec)
    rate = measure_workload_rate(shape.encoder, w)  # as `mega2bart plan` measures it
    per_flop = seconds_per_flop(rate)
    rows = w.batch * w.beams
    steps = rows * w.new_tokens * decoder_token_flops(shape, (w.new_tokens + 1) / 2, w.length)
    predicted = {
        "encoder": encoder_forward_flops(shape.encoder, w.batch, w.length) * per_flop,
        "source_projection": source_projection_flops(shape, w.batch, w.length) * per_flop,
        "decoding_steps": steps / (rate.small * 1e12),
        "step_constant": w.new_tokens * STEP_SECONDS["decoding_step"],
        "rate_large_tflops": rate.large,
        "rate_small_tflops": rate.small,
        "rate_fp32_tflops": rate.fp32,
        "efficiency": rate.efficiency,
        "decoding_step_flops": steps / w.new_tokens,
    }
    print(RESULT_PREFIX + json.dumps({"spec": spec, "first": phases[0], "second": phases[1], "plan": predicted}))


def report(results: list[dict]) -> str:
    lines = [
        "| run | call | total s | encoder s (plan) | first decoder call s (plan: projections) | "
        "other decoder calls s (plan: steps) | loop s (plan: step constant) | plan total s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = r["plan"]
        plan_total = p["encoder"] + p["source_projection"] + p["decoding_steps"] + p["step_constant"]
        for call in ("first", "second"):
            m = r[call]
            lines.append(
                f"| {r['spec']['name']} | {call} | {m['total']:.2f} | {m['encoder']:.2f} ({p['encoder']:.2f}) | "
                f"{m['first_decoder_call']:.3f} ({p['source_projection']:.3f}) | "
                f"{m['other_decoder_calls']:.3f} ({p['decoding_steps']:.3f}) | {m['loop']:.3f} "
                f"({p['step_constant']:.3f}) | {plan_total:.2f} |"
            )
    rates = "; ".join(
        f"{r['spec']['name']} ({r['spec']['dtype']}): large {r['plan']['rate_large_tflops']:.3f}, "
        f"few rows {r['plan']['rate_small_tflops']:.4f}, efficiency {r['plan'].get('efficiency') or 0:.2f}"
        for r in results
    )
    return "\n".join(lines) + f"\n\nMatmul rates measured in each process (TFLOP/s): {rates}.\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="c1,c2,t4,t7,h1,h8", help="bench_plan generation rows, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=Path, help="bench_plan's saved random models (default: its --models)")
    parser.add_argument("--raw", type=Path, help="append each row's result here (JSON lines)")
    parser.add_argument("--from-raw", type=Path, help="print the table of an earlier --raw file, no new runs")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if args.from_raw:
        print(report([json.loads(line) for line in args.from_raw.read_text().splitlines() if line.strip()]))
        return
    from bench_plan import saved_model, specs

    rows = specs(set(args.only.split(",")), args.threads, models=args.models)
    if any(row["task"] != "generate" for row in rows):
        raise SystemExit("--only: generation rows only (c1, c2, t3, t4, t7, t9, t12, h1, h2, h7, h8)")
    results = []
    for spec in rows:
        saved_model(spec)
        run = run_worker([sys.executable, __file__, "--worker", json.dumps(spec)], timeout=1800)
        result = run.result()
        if result is None:
            raise SystemExit(f"{spec['name']}: {(run.stderr.strip().splitlines() or ['no result'])[-1]}")
        result["spec"]["model_dir"] = "<--models>/" + spec["size"]
        result["other_load"] = round(run.other_load, 2)
        results.append(result)
        if args.raw:
            with args.raw.open("a") as handle:
                handle.write(json.dumps(result) + "\n")
        print(f"{spec['name']}: first call {result['first']['total']:.2f} s, other load {result['other_load']}")
    print(report(results))
    print(json.dumps(machine_summary()))


if __name__ == "__main__":
    main()
