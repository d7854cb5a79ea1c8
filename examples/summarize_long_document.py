"""Summarise a long document with a (fine-tuned) mega2bart model, beyond its context if need be.

    python examples/summarize_long_document.py --model runs/seq2seq-trainer/final --file report.txt
    python examples/summarize_long_document.py --model runs/seq2seq-trainer/final   # longest ACLSum test paper
    python examples/summarize_long_document.py --preset tiny --max-input-tokens 512  # offline random toy

Up to the context (16,384 tokens) a document is read in one pass; a longer one is cut into
overlapping windows, each window is summarised, and the window summaries are summarised again.
Every window's token span and partial summary is kept as provenance.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from mega2bart.builder import build_mega2bart, load_mega2bart, preset_kwargs
from mega2bart.documents import read_documents
from mega2bart.summarize import GenerationOptions, Summarizer


def longest_aclsum_paper() -> tuple[str, str]:
    from mega2bart.data import load_summarization_dataset

    test = load_summarization_dataset("aclsum")[0]["test"]
    row = max(test, key=lambda r: len(r["document"]))
    return row["id"], row["document"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--model", help="mega2bart model directory (or Hub id) to summarise with")
    group.add_argument("--preset", choices=["tiny"], help="tiny: random offline model (its summaries are noise)")
    parser.add_argument("--file", type=Path, help=".txt/.md/.html file; default: the longest ACLSum test paper")
    parser.add_argument("--max-input-tokens", type=int, help="context per window (default: the model's, 16384)")
    parser.add_argument("--max-new-tokens", type=int, help="summary length (default: the model's, 512)")
    parser.add_argument("--num-beams", type=int, help="beams (default: the model's, 4)")
    args = parser.parse_args()

    if args.preset:
        torch.manual_seed(0)
        model, tokenizer = build_mega2bart(**preset_kwargs(args.preset))
    else:
        model, tokenizer = load_mega2bart(args.model)
    if torch.cuda.is_available():
        model = model.to("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    doc_id, text = next(read_documents([args.file])) if args.file else longest_aclsum_paper()

    generation = GenerationOptions(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    summarizer = Summarizer(model, tokenizer, max_input_tokens=args.max_input_tokens, generation=generation)
    [result] = summarizer.summarize([text], ids=[doc_id])
    print(f"{result.id}: {result.num_tokens:,} tokens, {len(result.windows)} generation inputs, "
          f"{result.levels} level(s){', truncated' if result.truncated else ''}")
    for window in result.windows:
        print(f"  level {window.level} window {window.index}: tokens [{window.token_start}, {window.token_end})"
              f"{' from summaries ' + str(window.sources) if window.level else ''}: {window.summary[:60]!r}")
    print(f"\nSUMMARY\n{result.summary}")


if __name__ == "__main__":
    main()
