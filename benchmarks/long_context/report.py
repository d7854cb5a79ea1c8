"""The probe's reports: a run's markdown table, the mean and worst over seeds with the goal checked (`--over-seeds`),
and several runs in one table and plot (`--combine`)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import BUCKET_EDGES, BUCKET_NAMES
from .plot import plot_recall
from .scoring import rescore


def markdown(results: dict[str, Any]) -> str:
    arms = results["arms"]
    lines = [
        "| arm | context | "
        + " | ".join(f"recall {b}" for b in BUCKET_NAMES)
        + " | recall (all) | all facts in order | names in order | encoder cosine |",
        "|---|---|" + "---|" * (len(BUCKET_NAMES) + 4),
    ]
    for name, arm in arms.items():
        r = arm["score"]
        cells = [
            ("-" if r["recall_by_bucket"][b] is None else f"{100 * r['recall_by_bucket'][b]:.1f}%")
            for b in BUCKET_NAMES
        ]
        names = f"{100 * r['names_in_order']:.1f}%" if "names_in_order" in r else "-"
        lines.append(
            f"| {name} | {arm['context']:,} | "
            + " | ".join(cells)
            + f" | {100 * r['recall']:.1f}% | {100 * r['ordered']:.1f}% | {names} | {arm['encoder_cosine']:.3f} |"
        )
    s = results["settings"]
    facts = arms[next(iter(arms))]["score"]["facts_by_bucket"]
    lines += [
        "",
        f"{results['test_inputs']} held-out inputs of {s['length']:,} tokens, {len(BUCKET_NAMES)} facts each "
        f"(facts per bucket: {', '.join(f'{b} {n}' for b, n in facts.items())}); "
        f"bucket names are for 16,384 tokens, the same fractions of shorter inputs.",
    ]
    return "\n".join(lines) + "\n"


def bucket_labels(length: int) -> list[str]:
    """BUCKET_NAMES for inputs of `length` tokens (the same fractions): "0-2k", ... for 32,768."""
    edges = [round(edge * length / 1024) for edge in BUCKET_EDGES]
    return [f"{lo}-{hi}k" for lo, hi in itertools.pairwise(edges)]


def arm_seconds(run: dict[str, Any], name: str) -> float:
    """The seconds of the steps arm `name` of `run` needed (each timed by the run that made it, so a run resumed over
    sessions counts every step once): the data, its encoder's build and stages 1-2 (the LED arm's own, suffixed
    "-longformer"; MEGA and the truncated control share theirs) and its own training and evaluations."""
    suffix = "-longformer" if name.startswith("led") else ""
    trunk = {f"{step}{suffix}" for step in ("build", "stage1", "stage2", "widen")}
    return sum(
        seconds
        for step, seconds in run["seconds"].items()
        if step == "data" or step.startswith("data ") or step in trunk or f" {name} " in f" {step} "
    )


def climbs(runs: list[dict[str, Any]]) -> list[str]:
    """A line of each arm's steps up its curriculum and in stage 3, per seed, with the minutes of the steps that arm
    needed (`arm_seconds`); none where no run had a curriculum."""
    lines = []
    for name in runs[0]["arms"]:
        if not any(run["arms"].get(name, {}).get("curriculum") for run in runs):
            continue
        parts = []
        for run in runs:
            arm = run["arms"].get(name, {})
            rungs = " / ".join(f"{r['length'] // 1024}k {r['steps']}" for r in arm.get("curriculum", []))
            final = f"{arm.get('context', run['settings']['length']) // 1024}k {arm.get('stage3_steps')}"
            parts.append(
                f"seed {run['seed']}: {rungs} / {final} ({arm_seconds(run, name) / 60:.0f} min of steps)"
                if arm.get("stage3_steps") is not None
                else f"seed {run['seed']}: {rungs}"
            )
        lines.append(f"{name} curriculum and stage-3 steps (each ends at its loss or its cap): " + ", ".join(parts))
    return lines


def step_seconds(runs: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """Seconds per training step of every arm's rungs and final stage, per seed and as the mean over seeds, each
    as its run timed it, with every arm's ratio to the MEGA arm: the control's cost beside its recall. No lines
    where the runs have a single arm."""
    names = list(runs[0]["arms"])
    if len(names) < 2:
        return [], {}
    phases: dict[tuple[str, str], dict[int, float]] = {}  # (arm, phase) -> seed -> seconds per step
    order: list[str] = []
    for run in runs:
        for name in names:
            arm = run["arms"].get(name, {})
            timed = [(f"{r['length'] // 1024}k rung", r.get("seconds_per_step")) for r in arm.get("curriculum", [])]
            timed.append((f"{arm.get('context', 0) // 1024}k (final)", arm.get("stage3_seconds_per_step")))
            for phase, seconds in timed:
                if seconds is None:
                    continue
                if phase not in order:
                    order.append(phase)
                phases.setdefault((name, phase), {})[run["seed"]] = seconds

    def mean(name: str, phase: str) -> float | None:
        values = list(phases.get((name, phase), {}).values())
        return sum(values) / len(values) if values else None

    base = next((name for name in names if name.startswith("mega")), names[0])
    lines = [
        "",
        "Seconds per training step (the trainer's runtime over its steps, each timed in its own run; mean over "
        f"seeds, per seed in brackets; x = against {base}):",
        "",
        "| arm | " + " | ".join(order) + " |",
        "|---|" + "---|" * len(order),
    ]
    table: dict[str, Any] = {}
    for name in names:
        cells = []
        for phase in order:
            value, against = mean(name, phase), mean(base, phase)
            per_seed = phases.get((name, phase), {})
            table.setdefault(name, {})[phase] = {"mean": value, "by_seed": per_seed}
            if value is None:
                cells.append("-")
                continue
            ratio = f", {value / against:.1f}x" if against and name != base else ""
            seeds = ", ".join(f"{per_seed[s]:.2f}" for s in sorted(per_seed))
            cells.append(f"{value:.2f} s{ratio} ({seeds})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines, table


def over_seeds(paths: list[Path], out: Path) -> int:
    """Mean and worst over seeds (one results.json per seed) of every arm, the goal checked, in
    OUT/results_seeds.md and .json."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    for path, run in zip(paths, runs, strict=True):
        rescore(path, run)
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"two results have the same seed ({seeds}): pass one results.json per seed")

    def rows(
        get: Callable[[dict[str, Any]], dict[str, Any] | None], by_bucket: str = "recall_by_bucket"
    ) -> dict[str, Any] | None:
        scores = [get(run) for run in runs]
        if any(score is None or by_bucket not in score for score in scores):
            return None
        cells: dict[str, Any] = {}
        for bucket in BUCKET_NAMES:  # a bucket without facts (None) in a run is left out of its mean
            values = [v for v in (score[by_bucket][bucket] for score in scores) if v is not None]
            cells[bucket] = (sum(values) / len(values), min(values)) if values else None
        names = by_bucket == "name_recall_by_bucket"  # then "all" and "in order" count names, not whole facts
        for key in ("recall", "ordered", "names_in_order"):
            source = {"recall": "name_recall", "ordered": "names_in_order"}.get(key, key) if names else key
            values = [score[source] for score in scores]
            cells[key] = (sum(values) / len(values), min(values))
        return cells

    table: dict[str, Any] = {}
    for name in runs[0]["arms"]:
        table[name] = rows(lambda run, name=name: run["arms"].get(name, {}).get("score"))
        # the fact's name said (a miss whose name is said is a wrong code)
        table[f"{name}, names said"] = rows(
            lambda run, name=name: run["arms"].get(name, {}).get("score"), "name_recall_by_bucket"
        )
        if runs[0]["arms"][name].get("lone"):
            table[f"{name}, one fact per input"] = rows(
                lambda run, name=name: (run["arms"].get(name, {}).get("lone") or {}).get("score")
            )
        beyond = runs[0]["arms"][name].get("beyond")
        if beyond:
            label = f"{name} read at {beyond['length'] // 1024}k"
            table[label] = rows(lambda run, name=name: (run["arms"].get(name, {}).get("beyond") or {}).get("score"))
    main = table[next(iter(runs[0]["arms"]))]
    goal = {
        "every bucket >= 95% (worst seed)": all(main[b] is not None and main[b][1] >= 0.95 for b in BUCKET_NAMES),
        "all facts right and in order >= 90% (worst seed)": main["ordered"][1] >= 0.90,
    }

    def pct(pair: tuple[float, float] | None) -> str:
        return "-" if pair is None else f"{100 * pair[0]:.1f} / {100 * pair[1]:.1f}"

    length = runs[0]["settings"]["length"]
    lines = [
        f"Mean / worst over seeds {', '.join(map(str, seeds))} (recall, %):",
        "",
        "| arm | " + " | ".join(BUCKET_NAMES) + " | all | all facts in order | names in order |",
        "|---|" + "---|" * (len(BUCKET_NAMES) + 3),
    ]
    for name, cells in table.items():
        if cells is None:
            continue
        if " read at " in name:
            labels = bucket_labels(2 * length)
            name = f"{name} (buckets {labels[0]} ... {labels[-1]})"
        lines.append(
            f"| {name} | "
            + " | ".join(pct(cells[b]) for b in BUCKET_NAMES)
            + f" | {pct(cells['recall'])} | {pct(cells['ordered'])} | {pct(cells['names_in_order'])} |"
        )
    timing_lines, timing = step_seconds(runs)
    lines += timing_lines
    # {encoder kind: stage steps} per run; runs written before the LED arm have only the MEGA trunk's
    steps = [run.get("stage_steps_by_encoder") or {"mega": run.get("stage_steps", {})} for run in runs]
    kinds = list(dict.fromkeys(kind for st in steps for kind in st))
    lines += [
        "",
        "Stage 1 / stage 2 steps (each ends at its loss or its cap): "
        + ", ".join(
            f"seed {seed}: "
            + ", ".join(
                (f"{kind} " if len(kinds) > 1 else "")
                + f"{st.get(kind, {}).get('stage1')} / {st.get(kind, {}).get('stage2')}"
                for kind in kinds
            )
            for seed, st in zip(seeds, steps, strict=True)
        ),
        *climbs(runs),
        "Goal: " + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in goal.items()),
    ]
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (out / "results_seeds.md").write_text(text, encoding="utf-8")
    (out / "results_seeds.json").write_text(
        json.dumps(
            {
                "seeds": seeds,
                "runs": [str(p) for p in paths],
                "table": table,
                "goal": goal,
                "seconds_per_step": timing,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    # the plot: the mean over seeds of every row read at the training length
    plotted = {
        f"{name} (mean of {len(seeds)})": {
            "recall_by_bucket": {b: cells[b][0] if cells[b] else None for b in BUCKET_NAMES}
        }
        for name, cells in table.items()
        if cells is not None and " read at " not in name and "names said" not in name
    }
    plot_recall(plotted, out / "recall_by_depth_seeds.png", length)
    print(text)
    print(f"wrote {out / 'results_seeds.md'}, results_seeds.json, recall_by_depth_seeds.png")
    return 0


def combine(paths: list[Path], out: Path) -> int:
    """One table and one plot for several runs (e.g. `--ema-init default` and `long`): arms labelled by EMA init
    (and by stage-3 steps where the runs differ in them)."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    steps = {run["settings"].get("stage3_steps") for run in runs}

    def label(run: dict[str, Any], name: str) -> str:
        text = f"{name}, {run.get('ema_init', 'default')} EMA"
        return text + (f", {run['settings'].get('stage3_steps')} steps" if len(steps) > 1 else "")

    for path, run in zip(paths, runs, strict=True):
        rescore(path, run)
    arms = {label(run, name): arm for run in runs for name, arm in run["arms"].items()}
    if len(arms) < sum(len(run["arms"]) for run in runs):
        raise SystemExit("two runs have the same EMA init, stage-3 steps and arm names: nothing to tell them apart by")
    merged = {**runs[0], "arms": arms, "combined_from": [str(path) for path in paths]}
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(merged)
    (out / "results.md").write_text(table, encoding="utf-8")
    plot_recall(
        {name: arm["score"] for name, arm in arms.items()}, out / "recall_by_depth.png", runs[0]["settings"]["length"]
    )
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'recall_by_depth.png'}")
    return 0
