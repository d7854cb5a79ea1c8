"""Short trials for the planted-fact probe: a plain PyTorch loop that shows, every few steps, whether the model
has started to copy (teacher-forced accuracy on the names and the digits of held-out facts).

`bench_long_context.py` runs the probe with `mega2bart train`/`eval`; this script is how its model and its
first stages were chosen (benchmarks/README.md lists the trials and what they printed). It builds the probe
model from `bench_long_context.model_configs` (in `long_context/recipe.py`) with JSON overrides, so any trial can
be rerun:

    # one fact in 24 filler tokens, the probe's model and rate
    .venv/bin/python benchmarks/long_context_trials.py --code digits --filler 24 --steps 1000 --save /tmp/stage1.pt
    # then 1-5 facts in 128-token inputs, from there
    .venv/bin/python benchmarks/long_context_trials.py --code digits --length 128 --steps 1000 --load /tmp/stage1.pt
    # the first trials: 64 wide, decoder init 0.02
    .venv/bin/python benchmarks/long_context_trials.py --code digits --filler 24 --lr 3e-3 --steps 600 \\
        --encoder '{"hidden_size": 64, "intermediate_size": 64, "nffn_hidden_size": 128,
                    "shared_representation_size": 16}' --decoder '{"init_std": 0.02}'

Add `--slots` to print the accuracy of each slot of each fact (name, digits 1-4) once, e.g. with `--steps 0
--load` on a saved model and `--length 16384 --all-facts` to see what it copies from long inputs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_long_context as probe  # noqa: E402

# token slots of "The access code of the X archive is 47." / "... is 4 7 1 9.": (name, code slots, fact tokens)
SLOTS = {"number": (5, (8,), 10), "digits": (5, (8, 9, 10, 11), 13)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="{}", help="JSON overrides of the probe's encoder config")
    parser.add_argument("--decoder", default="{}", help="JSON overrides of the probe's decoder config")
    parser.add_argument(
        "--ema-init", choices=probe.EMA_INITS, default="port", help="MegaConfig.ema_init (the trials: port)"
    )
    parser.add_argument("--min-reach", type=float, default=4.0, help="MegaConfig.ema_min_reach with --ema-init long")
    parser.add_argument("--code", choices=probe.CODES, default="number", help="the facts' code (the trials: digits)")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW rate, constant after 20 warm-up steps")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--filler", type=int, help="one fact in this many filler tokens (stage 1)")
    parser.add_argument("--length", type=int, default=128, help="else: inputs of this many tokens")
    parser.add_argument("--all-facts", action="store_true", help="5 facts per training input (else 1-5)")
    parser.add_argument("--examples", type=int, default=4000, help="training inputs")
    parser.add_argument("--test-examples", type=int, default=32, help="held-out inputs (always 5 facts)")
    parser.add_argument("--every", type=int, default=50, help="report every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load", type=Path, help="start from this state dict")
    parser.add_argument("--save", type=Path, help="save the state dict here (every 200 steps and at the end)")
    parser.add_argument("--slots", action="store_true", help="print per-slot accuracy at the end")
    args = parser.parse_args()

    from mega2bart.builder import build_mega2bart
    from mega2bart.tokenization import load_offline_tokenizer

    torch.manual_seed(args.seed)
    tokenizer = load_offline_tokenizer(model_max_length=max(16384, args.length))
    encoder, decoder = probe.model_configs(16384, args.ema_init)
    encoder["ema_min_reach"] = args.min_reach
    encoder.update(json.loads(args.encoder))
    decoder.update(json.loads(args.decoder))
    model, tokenizer = build_mega2bart(encoder, decoder, tokenizer)
    if args.load:
        model.load_state_dict(torch.load(args.load))

    started = time.perf_counter()
    if args.filler:
        train = probe.make_single_fact_examples(
            tokenizer, "train", args.examples, args.filler, args.seed + 1, "one", code=args.code
        )
        test = probe.make_single_fact_examples(
            tokenizer, "test", args.test_examples, args.filler, args.seed + 3, "t", code=args.code
        )
    else:
        train = probe.make_examples(
            tokenizer,
            "train",
            args.examples,
            args.length,
            args.seed + 1,
            "s",
            some_buckets=not args.all_facts,
            code=args.code,
        )
        test = probe.make_examples(
            tokenizer, "test", args.test_examples, args.length, args.seed + 3, "t", code=args.code
        )
    print(f"data in {time.perf_counter() - started:.0f} s", flush=True)

    def batch(examples: list[Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs = tokenizer([e.document for e in examples], return_tensors="pt", padding=True)
        labels = tokenizer([e.summary for e in examples], return_tensors="pt", padding=True)["input_ids"]
        labels[labels == tokenizer.pad_token_id] = -100
        return inputs, labels

    digits = set(tokenizer.convert_tokens_to_ids([f"Ġ{d}" for d in range(100)]))  # codes: digits or 10-99
    names = set(tokenizer.convert_tokens_to_ids([f"Ġ{n}" for n in probe.NAMES]))
    test_inputs, test_labels = batch(test)
    is_digit = torch.tensor([[t in digits for t in row] for row in test_labels.tolist()])
    is_name = torch.tensor([[t in names for t in row] for row in test_labels.tolist()])

    def evaluate() -> tuple[float, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            out = model(**test_inputs, labels=test_labels)
        model.train()
        return float(out.loss), out.logits.argmax(-1) == test_labels

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    rng = random.Random(args.seed)
    started, smoothed = time.perf_counter(), None
    for step in range(1, args.steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, step / 20)
        inputs, labels = batch(rng.sample(train, args.batch))
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        smoothed = float(loss) if smoothed is None else 0.9 * smoothed + 0.1 * float(loss)
        if args.save and step % 200 == 0:
            torch.save(model.state_dict(), args.save)
        if step % args.every == 0:
            test_loss, right = evaluate()
            print(
                f"step {step} {time.perf_counter() - started:.0f}s train {smoothed:.3f} test {test_loss:.3f} "
                f"code_acc {float(right[is_digit].float().mean()):.3f} "
                f"name_acc {float(right[is_name].float().mean()):.3f}",
                flush=True,
            )
    if args.save:
        torch.save(model.state_dict(), args.save)
    if args.slots:
        test_loss, right = evaluate()
        print(f"test loss {test_loss:.3f}")
        name_slot, code_slots, fact_tokens = SLOTS[args.code]
        for k in range((test_labels.shape[1] - 2) // fact_tokens):
            column = 1 + k * fact_tokens  # after <s>
            slots = [float(right[:, column + j].float().mean()) for j in (name_slot, *code_slots)]
            print(f"fact {k + 1}: name {slots[0]:.2f}, code " + " ".join(f"{x:.2f}" for x in slots[1:]))


if __name__ == "__main__":
    main()
