"""Fill-mask with the seed MEGA encoder on transformers 5: the usage from its model card.

    python examples/fill_mask.py                          # BEE-spoke-data/mega-encoder-small-16k-v1 (Hub)
    python examples/fill_mask.py --text "The <mask> is long."
    python examples/fill_mask.py --preset tiny            # offline: a RANDOM tiny MEGA, predictions are noise

transformers 5 removed MEGA; `import mega2bart` registers the native port with the Auto classes,
so the seed checkpoint loads with the ordinary `pipeline("fill-mask", ...)`.
"""

from __future__ import annotations

import argparse

import torch
from transformers import pipeline

import mega2bart  # noqa: F401  registers model_type "mega" with AutoConfig / AutoModelForMaskedLM
from mega2bart.presets import DEFAULT_ENCODER


def make_pipeline(model: str, preset: str | None):
    if preset == "tiny":
        from mega2bart.models.mega import MegaConfig, MegaForMaskedLM
        from mega2bart.presets import TINY_MLM
        from mega2bart.tokenization import load_offline_tokenizer

        torch.manual_seed(0)
        mlm = MegaForMaskedLM(MegaConfig(**TINY_MLM)).eval()
        return pipeline("fill-mask", model=mlm, tokenizer=load_offline_tokenizer())
    return pipeline("fill-mask", model=model)  # downloads the checkpoint and its tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_ENCODER, help="MEGA masked-LM Hub id or directory")
    parser.add_argument("--preset", choices=["tiny"], help="tiny: random offline model (for tests)")
    parser.add_argument("--text", default="I love to <mask> memes.", help="text with one <mask>")
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args()

    fill = make_pipeline(args.model, args.preset)
    for prediction in fill(args.text, top_k=args.top_k):
        print(f"{prediction['score']:.4f}\t{prediction['token_str'].strip()!r}\t{prediction['sequence']}")


if __name__ == "__main__":
    main()
