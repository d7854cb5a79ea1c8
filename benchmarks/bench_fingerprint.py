"""What the weights fingerprint (`mega2bart.builder.fingerprint`) costs on a real-size model.

The build computes `model_fingerprint` once (the weights' own dtype and two casts); `mega2bart info` and every
recorded training run compute `folder_fingerprint` of a saved folder. Both are timed here on a model folder
(for the full size: `mega2bart build DIR --random-init`, 377M parameters), as wall time and as this process's
CPU time (user + system), which on a loaded machine is the closer estimate of a quiet one-thread run.

    .venv/bin/python benchmarks/bench_fingerprint.py DIR [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _harness import cpu_model, pin_threads


def _timed(action) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="A mega2bart model folder (`mega2bart build` output).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    pin_threads(args.threads)

    from mega2bart.builder.fingerprint import folder_fingerprint, model_fingerprint
    from mega2bart.modeling_mega2bart import Mega2BartModel

    model = Mega2BartModel.from_pretrained(args.model)
    parameters = sum(p.numel() for p in model.parameters())
    rows = {
        "model_fingerprint (own dtype + 2 casts)": lambda: model_fingerprint(model),
        "folder_fingerprint (the saved folder)": lambda: folder_fingerprint(args.model),
    }
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[0]
    print(f"{parameters / 1e6:.1f}M parameters; {cpu_model()}; {args.threads} thread(s); load average {load}")
    results = {}
    for name, action in rows.items():
        times = [_timed(action) for _ in range(args.repeats)]
        wall = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        results[name] = {"wall_s": wall, "cpu_s": cpu, "repeats": args.repeats}
        print(f"{name}: median wall {wall:.2f} s, median CPU {cpu:.2f} s ({args.repeats} repeats)")
    print(json.dumps({"parameters": parameters, "results": results}))


if __name__ == "__main__":
    main()
