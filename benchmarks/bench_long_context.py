"""Does a mega2bart model read the whole document? A planted-fact probe, trained from scratch on the CPU.

Every input is real text (ACLSum paper bodies, `mega2bart.data`'s offline "aclsum" set, run together)
cut to a target length, with K short fact sentences planted in it, one in each depth bucket
(0-1k, 1-4k, 4-8k, 8-12k, 12-16k of a 16,384-token input; the same fractions of a shorter one):

    ... The access code of the Delta archive is 47. ...

The entity is one of 24 names and the code a number from 10 to 99 (`--code digits`: 4 random digits,
"is 4 7 1 9."), drawn per input, so a fact is right by chance with probability 1/2,160 (1/240,000).
The target is the K facts in document order. Training inputs come from ACLSum's train papers,
held-out inputs from its test papers, with other seeds. Both are written as JSONL
("document"/"summary") that `mega2bart train` and `mega2bart eval` read unchanged.

The model is a small mega2bart built by `mega2bart.builder.build_mega2bart` from configs (random
init; MEGA with the seed's chunk size 1,024 and its bidirectional multi-dimensional damped EMA,
pre-norm ScaleNorm, simple relative bias), trained with `mega2bart train` in three stages:

1. one fact in `stage1_filler` tokens of filler (short, cheap: the model learns to find and copy a fact);
2. 1-5 facts in `stage2_length`-token inputs, random buckets (several facts, in document order);
3. full-length inputs (16,384 tokens, 5 facts), continuing from stage 2, one run per arm:
   - mega-16k: the model reads all `--length` tokens, in training and evaluation;
   - truncated-1024 (control): the same stage-2 model, trained and evaluated on the same data with
     inputs truncated to 1,024 tokens (its first chunk); it cannot see facts beyond that.

Then `mega2bart eval` generates greedily for the held-out inputs and this script scores the
predictions: recall (exact match of each fact sentence) per depth bucket and the share of outputs
that hold every fact in document order. It writes `results.json`, `results.md` and
`recall_by_depth.png` (a dependency-free PNG writer; no matplotlib needed).

    .venv/bin/python benchmarks/bench_long_context.py --quick        # 1,024-token inputs, minutes
    .venv/bin/python benchmarks/bench_long_context.py --out-dir runs/long_context   # the full run

This file is the command line and the run; `long_context/` holds the rest by concern (data, recipe, steps,
scoring, report, plot; its __init__ lists them).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import REPO, machine_summary  # noqa: E402
from long_context.data import (  # noqa: E402
    BUCKET_NAMES,
    CODES,
    FACT_TEMPLATE,
    NAMES,
    check_single_tokens,
    make_examples,
    make_fact,
    make_single_fact_examples,
    read_jsonl,
    write_jsonl,
)
from long_context.plot import Canvas, plot_recall  # noqa: E402
from long_context.recipe import (  # noqa: E402
    CONTROL_CONTEXT,
    EMA_INITS,
    FULL,
    QUICK,
    SHORT_WINDOW,
    Settings,
    build_model,
    eval_args,
    format_curriculum,
    launch_args,
    model_configs,
    parse_curriculum,
    train_args,
    widen,
)
from long_context.report import bucket_labels, combine, markdown, over_seeds  # noqa: E402
from long_context.scoring import bucket_of, encoder_similarity, score, score_eval  # noqa: E402
from long_context.steps import Steps, run_cli, seconds_per_step, trained_steps, training_losses  # noqa: E402

# what tests and long_context_trials.py import from here, besides what `main` uses
__all__ = [
    "FACT_TEMPLATE",
    "NAMES",
    "Canvas",
    "bucket_labels",
    "bucket_of",
    "check_single_tokens",
    "make_fact",
    "main",
    "score",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short inputs and a few steps: checks the pipeline (minutes)"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / "runs" / "long_context", help="data, models, logs, results"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP threads of each subprocess")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--length", type=int, help="input tokens (default: 16,384; --quick: 1,024)")
    parser.add_argument("--stage1-steps", type=int, help="optimiser steps on single facts in short filler")
    parser.add_argument("--stage2-steps", type=int, help="optimiser steps on 1-5 facts in short inputs")
    parser.add_argument("--stage3-steps", type=int, help="optimiser steps on full-length inputs, per arm")
    parser.add_argument(
        "--stage3-stop-loss",
        type=float,
        help="stage 3 ends once its loss is below this (default, or 0: never; it runs its whole schedule)",
    )
    parser.add_argument(
        "--stage3-learning-rate", type=float, help="the rungs' and stage 3's learning rate (default 0.001)"
    )
    parser.add_argument(
        "--curriculum",
        type=parse_curriculum,
        help="the full-length arm's rungs before stage 3, LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS,... each at most STEPS "
        "and ending at its loss (STOP_LOSS 0: never), or 'none' (stage 3 straight after stage 2); default "
        + format_curriculum(FULL.curriculum),
    )
    parser.add_argument("--test-examples", type=int, help="held-out inputs")
    parser.add_argument(
        "--ema-init",
        choices=EMA_INITS,
        default="long",
        help="MegaConfig.ema_init: the 4.x port's init (every dimension forgets within ~4 tokens), or reaches "
        "log-spaced from 4 to the input length (what `mega2bart build` gives a random-init MEGA)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=("mega", "truncated", "led"),
        default=["mega", "truncated"],
        help="stage-3 runs: the full-length MEGA (also read at twice the length), the 1,024-token truncation, and "
        "the LED-shaped control (its own stages 1-2; ~11x MEGA's time per 16k step on a CPU)",
    )
    parser.add_argument("--code", choices=CODES, default="number", help="a fact's code: a number 10-99 or 4 digits")
    parser.add_argument("--plot", type=Path, help="also copy the PNG here")
    parser.add_argument(
        "--fresh", action="store_true", help="redo every step (default: reuse the steps an earlier run finished)"
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only merge the arms of these runs' results.json (labelled by EMA init) into --out-dir's "
        "results.md and recall_by_depth.png",
    )
    parser.add_argument(
        "--over-seeds",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only report the mean and worst over these runs (one per seed) in --out-dir's results_seeds.md",
    )
    args = parser.parse_args(argv)
    if args.over_seeds:
        return over_seeds(args.over_seeds, args.out_dir)
    if args.combine:
        return combine(args.combine, args.out_dir)

    s = QUICK if args.quick else FULL
    overrides = {
        "length": args.length,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "stage3_steps": args.stage3_steps,
        "stage3_stop_loss": args.stage3_stop_loss,
        "stage3_learning_rate": args.stage3_learning_rate,
        "curriculum": args.curriculum,
        "test_examples": args.test_examples,
    }
    s = Settings(**{**asdict(s), **{k: v for k, v in overrides.items() if v is not None}})
    if args.curriculum is None:  # the default's rungs below --length (at 4,096 tokens: the 2,048 rung only)
        s.curriculum = tuple(rung for rung in s.curriculum if rung[0] < s.length)
    if s.stage3_stop_loss == 0:
        s.stage3_stop_loss = None
    if s.length < 512 or s.control_context >= s.length:
        raise SystemExit(f"--length ({s.length}) must be >= 512 and above the control context ({s.control_context})")
    lengths = [rung[0] for rung in s.curriculum]
    if lengths and (lengths != sorted(set(lengths)) or lengths[0] < 256 or lengths[-1] >= s.length):
        raise SystemExit(
            f"--curriculum lengths ({lengths}) must rise, start at >= 256 and stay below --length ({s.length})"
        )
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    from mega2bart.tokenization import load_offline_tokenizer

    tokenizer = load_offline_tokenizer(model_max_length=s.length)
    steps = Steps(out, fresh=args.fresh)
    stage1_data, stage2_data = out / "stage1.jsonl", out / "stage2.jsonl"
    stage3_data, test_data = out / "train.jsonl", out / "test.jsonl"

    # what the data depends on (the steps and rates of training do not: changing them reuses the data)
    data_settings = {
        "sizes": [getattr(s, f) for f in ("stage1_filler", "stage1_examples", "stage2_length", "stage2_examples")],
        "full": [s.length, s.stage3_examples, s.test_examples],
        "seed": args.seed,
        "code": args.code,
    }

    def make_data() -> None:
        write_jsonl(
            stage1_data,
            make_single_fact_examples(
                tokenizer, "train", s.stage1_examples, s.stage1_filler, args.seed + 1, "one", code=args.code
            ),
        )
        write_jsonl(
            stage2_data,
            make_examples(
                tokenizer,
                "train",
                s.stage2_examples,
                s.stage2_length,
                args.seed + 4,
                "short",
                some_buckets=True,
                code=args.code,
            ),
        )
        write_jsonl(
            stage3_data,
            make_examples(tokenizer, "train", s.stage3_examples, s.length, args.seed + 2, "train", code=args.code),
        )
        write_jsonl(
            test_data,
            make_examples(tokenizer, "test", s.test_examples, s.length, args.seed + 3, "test", code=args.code),
        )

    _, data_seconds, digest = steps.run("data", data_settings, "", make_data)
    print(
        f"data: {s.stage1_examples} x 1 fact in {s.stage1_filler} tokens, {s.stage2_examples} x {s.stage2_length}, "
        f"{s.stage3_examples} x {s.length}, {s.test_examples} held-out x {s.length} tokens in {data_seconds:.0f} s",
        flush=True,
    )
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    def command(name: str, cli_args: list[str], after: str) -> str:
        def action() -> float:
            # launched as keyed, except: a training run checkpoints every 100 steps, and one that an earlier run
            # of the same step (same key) left unfinished goes on from its newest checkpoint
            resume = cli_args[0] == "train" and steps.started(name, Steps.key(cli_args, after))
            if resume:
                print(f"{name}: interrupted in an earlier run, resumed from its newest checkpoint", flush=True)
            return run_cli(launch_args(cli_args, resume), logs / f"{name.replace(' ', '-')}.log", args.threads)

        _, _, key = steps.run(name, cli_args, after, action)
        return key

    def trunk(encoder: str, suffix: str) -> tuple[Path, str, dict[str, int]]:
        """Build a model (the `encoder` kind) and train it through stages 1 and 2: (its directory, digest, sizes)."""
        # the LED-shaped model trains stages 1 and 2 with a window that sees the whole short input (SHORT_WINDOW)
        led = encoder == "longformer"
        if led and max(s.stage1_filler + 64, s.stage2_length) > SHORT_WINDOW // 2:
            raise SystemExit(f"stages 1-2 inputs must fit in {SHORT_WINDOW // 2} tokens for the LED arm's window")
        parameters, _, key = steps.run(
            f"build{suffix}",
            [model_configs(s.length, args.ema_init), args.ema_init, encoder, *([SHORT_WINDOW] if led else [])],
            digest,
            lambda: build_model(
                out / f"model{suffix}",
                s.length,
                max_new_tokens=80,
                ema_init=args.ema_init,
                encoder=encoder,
                seed=args.seed,
                window=SHORT_WINDOW if led else CONTROL_CONTEXT,
            ),
        )
        print(f"model{suffix}: {parameters}", flush=True)
        previous = out / f"model{suffix}"
        # stage 1's inputs are the filler, one fact and <s>/</s>: any context above that keeps them whole
        for stage, data, context in ((1, stage1_data, s.stage1_filler + 64), (2, stage2_data, s.stage2_length)):
            name = f"stage{stage}{suffix}"
            key = command(
                name, train_args(previous, data, out / name, s, stage=stage, context=context, seed=args.seed), key
            )
            previous = out / name
        if led:
            wide = out / f"stage2{suffix}-window-{CONTROL_CONTEXT}"
            _, _, key = steps.run(f"widen{suffix}", [CONTROL_CONTEXT], key, lambda: widen(previous, wide))
            previous = wide
        return previous, key, parameters

    def climb(name: str, previous: Path, after: str, record: list[dict[str, Any]]) -> tuple[Path, str]:
        """Train `previous` up the curriculum's rungs, each on its own 5-fact inputs of its length and ending at
        its loss: (the last rung's model, its digest). Appends each rung's length, steps and losses to `record`."""
        for i, (length, count, *_) in enumerate(s.curriculum):
            data = out / f"train-{length}.jsonl"
            steps.run(
                f"data {length}",
                [data_settings, length, count],
                "",
                lambda data=data, length=length, count=count, i=i: write_jsonl(
                    data,
                    make_examples(
                        tokenizer, "train", count, length, args.seed + 20 + i, f"rung{length}", code=args.code
                    ),
                ),
            )
            rung_dir = out / f"{name}-rung-{length}"
            after = command(
                f"train {name} rung {length}",
                train_args(previous, data, rung_dir, s, stage=3, context=length, seed=args.seed, rung=i),
                after,
            )
            record.append(
                {
                    "length": length,
                    "steps": trained_steps(rung_dir),
                    "losses": training_losses(rung_dir),
                    "seconds": steps.seconds[f"train {name} rung {length}"],
                    "seconds_per_step": seconds_per_step(rung_dir),
                }
            )
            previous = rung_dir
        return previous, after

    # one run per arm: (name, encoder kind, context)
    plan = {
        "mega": (f"mega-{s.length // 1024}k", "mega", s.length),
        "truncated": (f"truncated-{s.control_context}", "mega", s.control_context),
        "led": (f"led-{CONTROL_CONTEXT}", "longformer", s.length),
    }
    trunks = {
        kind: trunk(kind, "" if kind == "mega" else f"-{kind}")
        for kind in dict.fromkeys(plan[arm][1] for arm in args.arms)
    }
    parameters = {kind: sizes for kind, (_, _, sizes) in trunks.items()}
    arms: dict[str, dict[str, Any]] = {}
    references = read_jsonl(test_data)
    for arm in args.arms:
        name, kind, context = plan[arm]
        previous, after, _ = trunks[kind]
        model_dir = out / name
        rungs: list[dict[str, Any]] = []
        if arm in ("mega", "led") and s.curriculum:
            previous, after = climb(name, previous, after, rungs)
        trained = command(
            f"train {name}",
            train_args(previous, stage3_data, model_dir, s, stage=3, context=context, seed=args.seed),
            after,
        )
        command(f"eval {name}", eval_args(model_dir, test_data, out / f"eval-{name}", s, context=context), trained)
        result, predictions = score_eval(references, out / f"eval-{name}", context)
        arms[name] = {
            "context": context,
            "score": result,
            "losses": {"stage3": training_losses(model_dir)},
            "stage3_steps": trained_steps(model_dir),
            "stage3_seconds_per_step": seconds_per_step(model_dir),
            **({"curriculum": rungs} if rungs else {}),
            "examples": [
                {"reference": r["summary"], "prediction": p}
                for r, p in zip(references[:3], predictions[:3], strict=True)
            ],
            "encoder_cosine": encoder_similarity(model_dir, [r["document"] for r in references[:2]], context),
        }
        print(f"{name}: {json.dumps(arms[name]['score'])}", flush=True)
        if arm == "mega" and s.beyond_examples:
            # the same model on inputs twice as long as any it was trained on (MEGA has no position cap)
            beyond = 2 * s.length
            beyond_data = out / f"test-{beyond}.jsonl"
            steps.run(
                f"data {beyond}",
                [data_settings, beyond, s.beyond_examples],
                "",
                lambda beyond=beyond, path=beyond_data: write_jsonl(
                    path,
                    make_examples(
                        tokenizer, "test", s.beyond_examples, beyond, args.seed + 5, "beyond", code=args.code
                    ),
                ),
            )
            eval_dir = out / f"eval-{name}-at-{beyond // 1024}k"
            command(
                f"eval {name} at {beyond // 1024}k",
                eval_args(model_dir, beyond_data, eval_dir, s, context=beyond),
                trained,
            )
            beyond_score, _ = score_eval(read_jsonl(beyond_data), eval_dir, beyond)
            arms[name]["beyond"] = {"length": beyond, "score": beyond_score}
            print(f"{name} at {beyond:,} tokens: {json.dumps(beyond_score)}", flush=True)
        if arm == "mega" and s.lone_examples:
            # one fact per input, `lone_examples` inputs per bucket: recall by depth without an order to keep
            lone_data = out / "test-lone.jsonl"
            steps.run(
                "data lone",
                [data_settings, s.lone_examples],
                "",
                lambda path=lone_data: write_jsonl(
                    path,
                    [
                        e
                        for b in range(len(BUCKET_NAMES))
                        for e in make_examples(
                            tokenizer, "test", s.lone_examples, s.length, args.seed + 6 + b, f"lone{b}",
                            only_bucket=b, code=args.code,
                        )
                    ],
                ),
            )  # fmt: skip
            eval_dir = out / f"eval-{name}-lone"
            command(f"eval {name} lone facts", eval_args(model_dir, lone_data, eval_dir, s, context=s.length), trained)
            lone_score, _ = score_eval(read_jsonl(lone_data), eval_dir, s.length)
            arms[name]["lone"] = {"score": lone_score}
            print(f"{name}, one fact per input: {json.dumps(lone_score)}", flush=True)

    results = {
        "settings": asdict(s),
        "seed": args.seed,
        "ema_init": args.ema_init,
        "code": args.code,
        "threads": args.threads,
        "machine": machine_summary(),
        "parameters": parameters["mega"] if "mega" in parameters else parameters,
        "arms_run": list(args.arms),
        "model_configs": dict(zip(("encoder", "decoder"), model_configs(s.length, args.ema_init), strict=True)),
        **(
            {
                "stage1_losses": training_losses(out / "stage1"),
                "stage2_losses": training_losses(out / "stage2"),
                "stage_steps": {name: trained_steps(out / name) for name in ("stage1", "stage2")},
            }
            if "mega" in trunks
            else {}
        ),
        "stage_steps_by_encoder": {
            kind: {f"stage{n}": trained_steps(out / f"stage{n}{'' if kind == 'mega' else '-' + kind}") for n in (1, 2)}
            for kind in trunks
        },
        "seconds": steps.seconds,
        "total_seconds": time.perf_counter() - started,
        "test_inputs": s.test_examples,
        "arms": arms,
        "command": "benchmarks/bench_long_context.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (out / "results.md").write_text(table, encoding="utf-8")
    plot_recall({name: arm["score"] for name, arm in arms.items()}, out / "recall_by_depth.png", s.length)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "recall_by_depth.png", args.plot)
    print(table)
    print(f"total {results['total_seconds']:.0f} s; wrote {out / 'results.json'}, results.md, recall_by_depth.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
