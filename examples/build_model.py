"""Build a mega2bart model in Python: the MEGA encoder + a BART decoder as one EncoderDecoderModel.

    python examples/build_model.py runs/mega2bart-large                 # seed encoder + facebook/bart-large (Hub)
    python examples/build_model.py runs/m2b-base --decoder facebook/bart-base
    python examples/build_model.py runs/tiny --preset tiny              # offline random toy

The builder logs every non-obvious step: which weights are random (the 768->1024 `enc_to_dec_proj`
for bart-large), the vocabulary alignment, the 16k context and the generation defaults. The saved
directory loads with `AutoModelForSeq2SeqLM` (after `import mega2bart`, or with
`trust_remote_code=True` without it).
"""

from __future__ import annotations

import argparse
import logging

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from mega2bart.builder import build_mega2bart, preset_kwargs, save_mega2bart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--preset", choices=["tiny", "base", "large"], default="large")
    parser.add_argument("--encoder", help="override the preset's encoder (Hub id or directory)")
    parser.add_argument("--decoder", help="override the preset's decoder (BART family)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    sources = preset_kwargs(args.preset)
    if args.encoder:
        sources["encoder"] = args.encoder
    if args.decoder:
        sources.update(decoder=args.decoder, tokenizer=args.decoder)
    model, tokenizer = build_mega2bart(**sources)
    info = model.mega2bart_build_info
    print(f"parameters: {info.parameters}")
    print(f"random-init: {info.random_init_parameters:,} parameters in {len(info.random_init)} tensors")
    print(f"context: {info.context_length} tokens; generation: {info.generation}")
    path = save_mega2bart(model, tokenizer, args.output_dir, overwrite=args.overwrite)

    # Reload the way a user of the saved directory would, and summarise a sentence.
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    reloaded_tokenizer = AutoTokenizer.from_pretrained(path)
    batch = reloaded_tokenizer(["MEGA reads sixteen thousand tokens at once."], return_tensors="pt")
    with torch.inference_mode():
        ids = reloaded.generate(**batch, max_new_tokens=8, min_new_tokens=1, num_beams=1)
    print(f"saved {path}; reloaded as {type(reloaded).__name__}; generated {ids.shape[1]} tokens")


if __name__ == "__main__":
    main()
