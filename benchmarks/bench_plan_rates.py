"""The rates behind the planner's time model, measured directly (issue 33, run P7).

    python benchmarks/bench_plan_rates.py --threads 2 --json benchmarks/results_plan_rates.json

Three measurements on the saved random `base` model of bench_plan (`--models`), each in this one process:
- the whole MEGA encoder's forward at 1,024, 4,096 and 16,384 tokens in fp32 and bf16 (the model cast), as a
  share of a square matmul's rate in the same dtype (`measure_matmul_rate`): what `MODEL_EFFICIENCY` assumed
  and what `measure_model_efficiency` now measures on one layer (printed beside it);
- the decoder's cost per decoding step (the mean of every decoder call after the first of a `generate` call,
  12 new tokens) for 1, 2, 4 and 8 beams, base and large, fp32 and bf16;
- the optimiser step in ns per parameter (`measure_optimizer_cost`) over 20M and 140M parameters.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=Path, help="bench_plan's saved random models (default: its --models)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    import torch
    from _harness import machine_summary
    from _plan_worker import generate, load
    from bench_plan import MODELS, saved_model

    import mega2bart.cli  # noqa: F401 (what every command has imported when it starts)
    from mega2bart.plan import load_shape, measure_matmul_rate, measure_model_efficiency, measure_optimizer_cost
    from mega2bart.plan.allocator import keep_rss_near_live
    from mega2bart.plan.timing import encoder_forward_flops

    keep_rss_near_live()
    torch.set_num_threads(args.threads)
    models = args.models or MODELS
    out: dict = {"threads": args.threads, "machine": machine_summary(), "encoder": [], "decoding": [], "optimizer": []}

    for size in ("base", "large"):
        saved_model({"load": "disk", "size": size, "model_dir": str(models / size)})

    encoder_shape = load_shape("base").encoder
    for dtype in ("fp32", "bf16"):
        torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
        model = load({"size": "base", "load": "disk", "model_dir": str(models / "base")}, torch_dtype).eval()
        rate = measure_matmul_rate("cpu", dtype)
        for length in (1024, 4096, 16384):
            ids = torch.randint(4, 50000, (1, length), generator=torch.Generator().manual_seed(0))
            times = []
            for _ in range(2):
                start = time.perf_counter()
                with torch.inference_mode():
                    model.encoder(input_ids=ids, attention_mask=torch.ones_like(ids))
                times.append(time.perf_counter() - start)
            flops = encoder_forward_flops(encoder_shape, 1, length)
            layer = measure_model_efficiency(encoder_shape, rate, "cpu", dtype, length)
            row = {
                "dtype": dtype,
                "length": length,
                "seconds": min(times),
                "matmul_tflops": rate.large,
                "efficiency": flops / (rate.large * 1e12) / min(times),
                "one_layer_efficiency": layer.efficiency,
            }
            out["encoder"].append(row)
            print(
                f"encoder {dtype} {length:>6} tokens: {row['seconds']:.2f} s, efficiency {row['efficiency']:.2f} "
                f"(one layer, as `plan` measures it: {row['one_layer_efficiency']:.2f})",
                flush=True,
            )
        del model

    for size in ("base", "large"):
        for dtype in ("fp32", "bf16"):
            torch_dtype = torch.bfloat16 if dtype == "bf16" else torch.float32
            model = load({"size": size, "load": "disk", "model_dir": str(models / size)}, torch_dtype).eval()
            calls: list[float] = []
            forward = model.decoder.forward

            def timed(*a, forward=forward, calls=calls, **k):
                start = time.perf_counter()
                result = forward(*a, **k)
                calls.append(time.perf_counter() - start)
                return result

            model.decoder.forward = timed
            ids = torch.randint(4, 50000, (1, 1024), generator=torch.Generator().manual_seed(0))
            for beams in (1, 2, 4, 8):
                per_step = []
                for _ in range(2):
                    calls.clear()
                    with torch.inference_mode():
                        generate(model, {"beams": beams, "new_tokens": 12}, ids, torch.ones_like(ids))
                    per_step.append(sum(calls[1:]) / (len(calls) - 1))
                row = {"size": size, "dtype": dtype, "rows": beams, "ms_per_step": 1000 * min(per_step)}
                out["decoding"].append(row)
                print(f"decoding {size} {dtype} {beams} rows: {row['ms_per_step']:.1f} ms per step", flush=True)
            del model

    for millions in (20, 140):
        for optimizer in ("sgd", "adamw", "adafactor"):
            ns = measure_optimizer_cost(optimizer, parameters=millions * 2**20)
            out["optimizer"].append({"optimizer": optimizer, "parameters_m": millions, "ns_per_parameter": ns})
            print(f"optimizer {optimizer} over {millions}M parameters: {ns:.2f} ns per parameter", flush=True)

    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
