"""fill-mask through transformers' pipeline: a tiny random MEGA offline, the real seed checkpoint when the Hub is there."""

from __future__ import annotations

import pytest
import torch
from mega_tiny import tiny_config
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from mega2bart.models.mega import MegaForMaskedLM
from mega2bart.tokenization import load_offline_tokenizer


def test_fill_mask_pipeline_on_tiny_model(tmp_path) -> None:
    tokenizer = load_offline_tokenizer()
    torch.manual_seed(0)
    model = MegaForMaskedLM(tiny_config(vocab_size=len(tokenizer)))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    # from a directory, resolved by the Auto classes after `import mega2bart`
    fill = pipeline("fill-mask", model=str(tmp_path), top_k=3)
    predictions = fill("I love to <mask> memes.")
    assert len(predictions) == 3
    assert all(p["token"] != tokenizer.mask_token_id for p in predictions)
    scores = [p["score"] for p in predictions]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
    # the pipeline's top guess is the argmax of the model's logits at the mask
    encoded = tokenizer("I love to <mask> memes.", return_tensors="pt")
    mask_index = (encoded.input_ids[0] == tokenizer.mask_token_id).nonzero().item()
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        logits = reloaded(**encoded).logits[0, mask_index]
    assert predictions[0]["token"] == int(logits.argmax())
    # a long input (not a multiple of the chunk size) goes through too
    long_text = "word " * 300 + "I love to <mask> memes."
    assert len(fill(long_text)) == 3


@pytest.mark.slow
def test_real_seed_checkpoint_fills_the_mask() -> None:
    """Needs the Hugging Face Hub: the seed model card's example, with strict loading."""
    name = "BEE-spoke-data/mega-encoder-small-16k-v1"
    model, info = AutoModelForMaskedLM.from_pretrained(name, output_loading_info=True)
    assert isinstance(model, MegaForMaskedLM)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert sum(p.numel() for p in model.parameters()) == 122_009_736  # docs/mega.md#parameter-counts
    tokenizer = AutoTokenizer.from_pretrained(name)
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, top_k=5)
    predictions = fill("I love to <mask> memes.")
    assert len(predictions) == 5
    # a trained MLM puts real mass on its top words and predicts word-like tokens
    assert predictions[0]["score"] > 0.05
    assert all(p["token_str"].strip().isalpha() for p in predictions[:3])
