"""glibc's malloc settings against each other on bench_plan's rows: peak RSS and the speed each costs (issue 33).

    python benchmarks/bench_malloc.py --raw benchmarks/results_malloc.jsonl --markdown benchmarks/results_malloc.md
    python benchmarks/bench_malloc.py --from-raw benchmarks/results_malloc.jsonl     # the table again, no runs

Every measurement is one fresh `_plan_worker.py` process (bench_plan's `measure`: the model loaded from disk as a
command loads it, 1 thread), and the settings are interleaved: for each row and each repeat, every setting once,
the order rotated by one from repeat to repeat, so that the runs a ratio compares ran minutes apart under the
same load. The table gives, per row and setting, the median of the repeats and their range: the whole process's
peak RSS (`VmHWM`), the measured call's CPU time (user + system: the generate call or the second training step),
its wall time, and the ratio of each to glibc's defaults, taken repeat by repeat (the same repeat's glibc run)
and then the median and range of those ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_plan import MODELS, measure, specs  # noqa: E402

MIB = 1024 * 1024
# name -> what the worker's spec gets: glibc's defaults (the thresholds slide), thresholds fixed with mallopt
# (the trim threshold twice the mmap one, glibc's own rule when it slides), or the defaults with the heap's free
# pages handed back after every training step (generation rows have no step boundary the worker can reach)
SETTINGS: dict[str, dict] = {
    "glibc": {"malloc": "glibc"},
    "256k": {"malloc": {"mmap_threshold": 256 * 1024, "trim_threshold": 128 * 1024}},
    "4m": {"malloc": {"mmap_threshold": 4 * MIB, "trim_threshold": 8 * MIB}},
    "16m": {"malloc": {"mmap_threshold": 16 * MIB, "trim_threshold": 32 * MIB}},
    "32m": {"malloc": {"mmap_threshold": 32 * MIB, "trim_threshold": 64 * MIB}},
    "trim-steps": {"malloc": "glibc", "malloc_trim": True},
}
# bench_plan rows, made shorter where they take minutes (fewer new tokens, fewer labels)
ROWS: dict[str, dict] = {
    "t1": {},  # tiny, train, 4,096 tokens, batch 2, 64 labels, AdamW
    "t4": {"new_tokens": 4},  # base, generate, 1,024 tokens, 4 beams
    "t5": {"length": 512, "label_tokens": 32},  # base, train, AdamW (run P4's allocator pair)
    "h5": {},  # base, train, 384 tokens, 40 labels, bf16 autocast, AdamW (held out)
    "h4": {},  # tiny, train, 6,144 tokens, batch 3, 32 labels, SGD (held out)
}


def grid(rows: list[str], settings: list[str], repeats: int, models: Path) -> list[dict]:
    """The worker specs in the order they run (each tagged with its setting and repeat)."""
    base = {spec["name"]: spec for spec in specs(set(rows), 1, models=models)}
    out = []
    for row in rows:
        for repeat in range(repeats):
            shift = repeat % len(settings)
            for setting in settings[shift:] + settings[:shift]:
                if SETTINGS[setting].get("malloc_trim") and base[row]["task"] != "train":
                    continue
                spec = {**base[row], **ROWS.get(row, {}), **SETTINGS[setting]}
                out.append({**spec, "setting": setting, "repeat": repeat})
    return out


def cpu(result: dict) -> float:
    return result["cpu_user_s"] + result["cpu_sys_s"]


def spread(values: list[float], fmt: str) -> str:
    """The median, and the range when there is more than one value."""
    text = format(statistics.median(values), fmt)
    return text if len(values) < 2 else f"{text} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def table(results: list[dict]) -> str:
    done = [r for r in results if "error" not in r]
    by: dict[tuple[str, str], dict[int, dict]] = {}
    for result in done:
        spec = result["spec"]
        by.setdefault((spec["name"], spec["setting"]), {})[spec["repeat"]] = result
    lines = [
        "| row | setting | runs | peak MB | peak vs glibc | call CPU s (user + sys) | sys s | CPU vs glibc "
        "| call wall s | wall vs glibc | process CPU s | other load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = list(dict.fromkeys(r["spec"]["name"] for r in done))
    for row in rows:
        glibc = by.get((row, "glibc"), {})
        for setting in SETTINGS:
            runs = by.get((row, setting))
            if not runs:
                continue
            got = list(runs.values())
            paired = [(runs[k], glibc[k]) for k in runs if k in glibc]

            def ratio(value, paired=paired, setting=setting) -> str:
                if setting == "glibc" or not paired:
                    return ""
                return spread([value(a) / value(b) for a, b in paired], ".2f")

            lines.append(
                f"| {row} | {setting} | {len(got)} | {spread([r['process_peak_bytes'] / 1e6 for r in got], ',.0f')} | "
                f"{ratio(lambda r: r['process_peak_bytes'])} | {spread([cpu(r) for r in got], '.2f')} | "
                f"{spread([r['cpu_sys_s'] for r in got], '.2f')} | {ratio(cpu)} | "
                f"{spread([r['seconds'] for r in got], '.2f')} | {ratio(lambda r: r['seconds'])} | "
                f"{spread([r['process_cpu_s'] for r in got], '.1f')} | "
                f"{spread([r['other_load'] for r in got], '.1f')} |"
            )
    failed = [r for r in results if "error" in r]
    for result in failed:
        lines.append(f"\n{result['spec']['name']} {result['spec']['setting']}: {result['error']}")
    loads = [r["loadavg"] for r in done]
    if loads:
        lines.append(f"\nLoad average (1 min) at the end of each run: {spread(loads, '.2f')}; {len(done)} runs.")
    return "\n".join(lines)


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated bench_plan rows")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated settings")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--raw", type=Path, help="append each run's result here (jsonl)")
    parser.add_argument("--from-raw", type=Path, help="no runs: the table from this jsonl")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--models", type=Path, default=MODELS, help="where the saved models are (bench_plan's)")
    args = parser.parse_args()

    if args.from_raw:
        results = _read(args.from_raw)
    else:
        settings = args.settings.split(",")
        unknown = [s for s in settings if s not in SETTINGS]
        if unknown:
            parser.error(f"--settings {','.join(unknown)}: not one of {', '.join(SETTINGS)}")
        # a run already in --raw (same row, setting and repeat) is not run again: an interrupted grid resumes
        results = _read(args.raw) if args.raw and args.raw.exists() else []
        done = {(r["spec"]["name"], r["spec"]["setting"], r["spec"]["repeat"]) for r in results}
        for spec in grid(args.rows.split(","), settings, args.repeats, args.models):
            if (spec["name"], spec["setting"], spec["repeat"]) in done:
                continue
            result = measure(spec, args.timeout)
            results.append(result)
            if args.raw:
                with args.raw.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
            cost = f"{cpu(result):.2f} s CPU" if "error" not in result else result["error"]
            print(f"{spec['name']} {spec['setting']} #{spec['repeat']}: {result.get('process_peak_bytes')} B, {cost}")
    text = table(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
