"""Continued MLM pretraining (mega2bart.pretraining): config checks, text loading, packing, runs, resume."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mega2bart.pretraining import (
    Phase,
    PretrainConfig,
    load_documents,
    pack_documents,
    parse_phases,
    run_pretraining,
)

WORDS = "the model reads long documents and writes short summaries of the main results".split()


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three .txt documents of ~400 words from a 14-word vocabulary (learnable in a few steps)."""
    root = tmp_path_factory.mktemp("texts")
    rng = random.Random(0)
    for i in range(3):
        (root / f"doc{i}.txt").write_text(" ".join(rng.choice(WORDS) for _ in range(400)))
    return root


def _config(text_dir: Path, output_dir: Path, **overrides) -> PretrainConfig:
    values = dict(
        encoder="tiny",
        text_files=[str(text_dir)],
        output_dir=str(output_dir),
        max_length=64,
        max_steps=6,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        save_steps=3,
        logging_steps=3,
    )
    return PretrainConfig(**{**values, **overrides})


# ----------------------------------------------------------------------------------------------
# configuration


def test_parse_phases() -> None:
    assert parse_phases("2048:0.4,4096:0.3", 1001) == [Phase(2048, 0.4, 501), Phase(4096, 0.3, 500)]
    assert parse_phases("64:0.4:7, 128:0.3", 10) == [Phase(64, 0.4, 7), Phase(128, 0.3, 3)]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("2048-0.4", "not length:mask_ratio"),
        ("2048:abc", "not length:mask_ratio"),
        ("2048:1.5", r"mask ratio \(1.5\) must be in \(0, 1\)"),
        ("4:0.3", r"max_length \(4\) must be >= 8"),
        ("64:0.4:20,128:0.3", "leaves -10 steps"),
        (" , ", "empty"),
    ],
)
def test_bad_phase_specs(spec: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PretrainConfig(encoder="tiny", dataset="aclsum", phases=spec, max_steps=10)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no text to pretrain on"):
        PretrainConfig(encoder="tiny")
    with pytest.raises(ValueError, match="mask ratio"):
        PretrainConfig(encoder="tiny", dataset="aclsum", mask_ratio=0.0)
    with pytest.raises(ValueError, match="`max_steps` \\(0\\)"):
        PretrainConfig(encoder="tiny", dataset="aclsum", max_steps=0)
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("encoder: tiny\ndataset: aclsum\nmask_rate: 0.3\n")
    with pytest.raises(ValueError, match=r"unknown PretrainConfig field\(s\) \['mask_rate'\]"):
        PretrainConfig.from_yaml(yaml_file)
    yaml_file.write_text("encoder: tiny\ndataset: aclsum\nmax_length: 128\n")
    config = PretrainConfig.from_yaml(yaml_file, max_steps=3)
    assert (config.max_length, config.max_steps, config.resolved_phases()) == (128, 3, [Phase(128, 0.4, 3)])


def test_config_checks_types_and_ranges() -> None:
    config = PretrainConfig(encoder="tiny", text_files="docs", learning_rate="1e-4", gradient_checkpointing="off")
    assert (config.learning_rate, config.gradient_checkpointing, config.text_files) == (1e-4, False, ["docs"])
    for overrides, message in [
        ({"learning_rate": "fast"}, "`learning_rate` ('fast') must be a finite number"),
        ({"bf16": "maybe"}, "`bf16` ('maybe') must be true/false"),
        ({"weight_decay": -0.1}, "`weight_decay` (-0.1) must be >= 0"),
        ({"max_steps": "ten"}, "`max_steps` ('ten') must be an integer"),
    ]:
        with pytest.raises(ValueError) as caught:
            PretrainConfig(**{"encoder": "tiny", "dataset": "aclsum", **overrides})
        assert str(caught.value).startswith(message), str(caught.value)


# ----------------------------------------------------------------------------------------------
# text and packing


def test_load_documents_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first document")
    (tmp_path / "b.md").write_text("# second\n\ndocument")
    (tmp_path / "c.jsonl").write_text('{"text": "third"}\n\n{"text": "fourth"}\n{"text": "  "}\n')
    (tmp_path / "ignored.csv").write_text("x")
    docs = load_documents(PretrainConfig(encoder="tiny", text_files=[str(tmp_path)]))
    assert docs == ["first document", "# second\n\ndocument", "third", "fourth"]
    assert load_documents(PretrainConfig(encoder="tiny", text_files=[str(tmp_path)], max_documents=2)) == docs[:2]


@pytest.mark.parametrize(
    ("name", "content", "error", "match"),
    [
        ("missing.txt", None, FileNotFoundError, "does not exist"),
        ("data.csv", "a,b", ValueError, "has suffix '.csv'"),
        ("rows.jsonl", '{"body": "x"}\n', ValueError, r"rows.jsonl:1 has no field 'text' \(found \['body'\]\)"),
        ("broken.jsonl", "{not json\n", ValueError, "broken.jsonl:1 is not valid JSON"),
        ("empty.txt", "   ", ValueError, "no non-empty document"),
    ],
)
def test_load_documents_errors(tmp_path: Path, name: str, content: str | None, error: type, match: str) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(error, match=match):
        load_documents(PretrainConfig(encoder="tiny", text_files=[str(tmp_path / name)]))


@pytest.mark.skipif(importlib.util.find_spec("gensim") is not None, reason="gensim is installed")
def test_gensim_wiki_needs_gensim() -> None:
    with pytest.raises(ImportError, match=r"pip install gensim==4\.4\.0"):
        load_documents(PretrainConfig(encoder="tiny", dataset="gensim-wiki"))


def test_pack_documents() -> None:
    rows = pack_documents([[10, 11, 12], [20, 21], [30, 31, 32, 33]], max_length=5, bos_id=0, eos_id=2)
    # stream 10 11 12 </s> 20 21 </s> 30 31 32 33 </s> (12 tokens) -> 3 rows of <s> + 4, no tail
    assert rows == [[0, 10, 11, 12, 2], [0, 20, 21, 2, 30], [0, 31, 32, 33, 2]]
    with pytest.raises(ValueError, match="fewer than one packed sequence of max_length 64"):
        pack_documents([[5, 6]], max_length=64, bos_id=0, eos_id=2)


@pytest.fixture(scope="module")
def jsonl_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four rows of ~150 words in a local .jsonl: a stand-in for a Hub dataset read with streaming=True."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    rng = random.Random(1)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(150))} for _ in range(4)]
    rows.insert(2, {"text": "  "})  # empty documents are dropped in both modes
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_packed_stream_gives_the_sequences_of_pack_documents(text_dir: Path, jsonl_corpus: Path, tmp_path: Path):
    from mega2bart.pretraining import PackedStream, load_pretrain_tokenizer

    config = _config(text_dir, tmp_path, dataset=str(jsonl_corpus), max_documents=6)
    streamed = dataclasses.replace(config, streaming=True)
    tokenizer = load_pretrain_tokenizer(config)
    ids = tokenizer(load_documents(config), add_special_tokens=False, verbose=False)["input_ids"]
    expected = pack_documents(ids, 64, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert [row["input_ids"] for row in PackedStream(streamed, tokenizer, 64)] == expected
    assert len(expected) > 10


def test_streaming_run_reads_a_local_jsonl_stream_and_stops_at_max_steps(jsonl_corpus: Path, tmp_path: Path) -> None:
    from mega2bart.pretraining import PackedStream, load_pretrain_tokenizer

    config = PretrainConfig(
        encoder="tiny",
        dataset=str(jsonl_corpus),
        streaming=True,
        output_dir=str(tmp_path / "out"),
        max_length=64,
        max_steps=12,
        per_device_train_batch_size=2,
        learning_rate=3e-3,
        save_steps=6,
        logging_steps=3,
    )
    sequences = len(list(PackedStream(config, load_pretrain_tokenizer(config), 64)))
    assert 2 * 12 > sequences  # the stream ends before max_steps: it is read again
    final = run_pretraining(config)
    phase = json.loads((final.parent / "metrics.json").read_text())["phases"][0]
    assert phase["steps"] == 12 and phase["sequences"] is None  # streamed: never counted
    state = json.loads((final.parent / "phase1-len64" / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12
    assert phase["mlm_loss_after"] < phase["mlm_loss_before"], phase


# ----------------------------------------------------------------------------------------------
# runs


@pytest.fixture(scope="module")
def two_phase_run(text_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run") / "out"
    return run_pretraining(_config(text_dir, output, phases="64:0.4:6,128:0.3:4", max_steps=10))


def test_pretraining_lowers_mlm_loss(two_phase_run: Path) -> None:
    metrics = json.loads((two_phase_run.parent / "metrics.json").read_text())
    phases = metrics["phases"]
    assert [(p["max_length"], p["mask_ratio"], p["steps"]) for p in phases] == [(64, 0.4, 6), (128, 0.3, 4)]
    for phase in phases:
        assert phase["mlm_loss_after"] < phase["mlm_loss_before"] - 0.2, phase
    assert (two_phase_run.parent / "pretrain_config.yaml").is_file()


def test_result_loads_and_builds(two_phase_run: Path) -> None:
    from mega2bart.builder import build_mega2bart
    from mega2bart.models.mega import MegaForMaskedLM, MegaModel
    from mega2bart.presets import TINY_DECODER

    saved = load_file(str(two_phase_run / "model.safetensors"))
    assert "mlm_head.weight" not in saved and "mlm_head.bias" in saved
    mlm = MegaForMaskedLM.from_pretrained(two_phase_run)
    encoder = MegaModel.from_pretrained(two_phase_run)
    torch.testing.assert_close(
        encoder.embedding_layer.word_embeddings.weight, mlm.mega.embedding_layer.word_embeddings.weight
    )
    model, tokenizer = build_mega2bart(
        encoder=str(two_phase_run), decoder={**TINY_DECODER, "model_type": "bart"}, tokenizer=str(two_phase_run)
    )
    torch.testing.assert_close(
        model.encoder.embedding_layer.word_embeddings.weight, mlm.mega.embedding_layer.word_embeddings.weight
    )
    batch = tokenizer(["the model reads long documents"], return_tensors="pt")
    out = model(**batch, labels=tokenizer(["short summaries"], return_tensors="pt").input_ids)
    assert torch.isfinite(out.loss)


def test_outputs_and_checkpoints_carry_the_mega_code(two_phase_run: Path) -> None:
    """The final model, each phase's model and the Trainer checkpoints are self-contained MEGA folders: the MEGA
    code and an auto_map naming every head (MegaPreTrainedModel.save_pretrained), for trust_remote_code."""
    from mega2bart.models.mega import MEGA_AUTO_MAP

    phases = sorted(two_phase_run.parent.glob("phase*"))
    folders = [two_phase_run, *(p / "model" for p in phases), *(c for p in phases for c in p.glob("checkpoint-*"))]
    assert len(phases) == 2 and len(folders) >= 5, folders
    for folder in folders:
        assert (folder / "modeling_mega.py").is_file() and (folder / "configuration_mega.py").is_file(), folder
        assert json.loads((folder / "config.json").read_text())["auto_map"] == MEGA_AUTO_MAP, folder


def test_continue_from_a_checkpoint_directory(two_phase_run: Path, text_dir: Path, tmp_path: Path) -> None:
    """A saved MegaForMaskedLM directory (with its tokenizer) is a valid `encoder`."""
    final = run_pretraining(
        _config(text_dir, tmp_path / "again", encoder=str(two_phase_run), max_steps=2, gradient_checkpointing=False)
    )
    assert json.loads((final.parent / "metrics.json").read_text())["phases"][0]["steps"] == 2


def test_output_dir_must_be_empty_without_resume(two_phase_run: Path, text_dir: Path) -> None:
    with pytest.raises(ValueError, match="is not empty: pass resume=True"):
        run_pretraining(_config(text_dir, two_phase_run.parent))


def test_rerun_after_too_little_text_is_not_blocked(text_dir: Path, tmp_path: Path) -> None:
    """A run that fails on its input writes nothing, so the corrected rerun needs no --resume."""
    short = tmp_path / "short.txt"
    short.write_text("only a few words")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="fewer than one packed sequence"):
        run_pretraining(_config(text_dir, out, text_files=[str(short)], phases="64:0.4:1,128:0.3:1", max_steps=2))
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())
    out.mkdir(exist_ok=True)
    (out / "pretrain_config.yaml").write_text("left: by an older version\n")  # what earlier versions left behind
    final = run_pretraining(_config(text_dir, out, max_steps=1, save_steps=1, gradient_checkpointing=False))
    assert (final / "model.safetensors").is_file()


def test_resume_continues_from_the_last_checkpoint(text_dir: Path, tmp_path: Path) -> None:
    """A run cut after its step-3 checkpoint resumes there (not from scratch) and ends at step 6.

    Not bit-identical to an uninterrupted run: the MLM masks come from the global RNG, which the
    resumed run does not reproduce exactly (weights, optimiser, scheduler and data order are restored).
    """
    cut = run_pretraining(_config(text_dir, tmp_path / "cut"))
    phase_dir = cut.parent / "phase1-len64"
    # simulate a crash after the step-3 checkpoint: drop everything written later
    for path in [phase_dir / "checkpoint-6", phase_dir / "model", cut]:
        for file in sorted(path.rglob("*"), reverse=True):
            file.unlink() if file.is_file() else file.rmdir()
        path.rmdir()
    (phase_dir / "phase.json").unlink()
    # mark the checkpoint: a resumed run starts from these weights, a fresh one would not
    weights_file = str(phase_dir / "checkpoint-3" / "model.safetensors")
    weights = load_file(weights_file)
    weights["mlm_head.bias"] = torch.full_like(weights["mlm_head.bias"], 5.0)
    save_file(weights, weights_file, metadata={"format": "pt"})
    resumed = run_pretraining(_config(text_dir, tmp_path / "cut", resume=True))
    metrics = json.loads((resumed.parent / "metrics.json").read_text())
    assert metrics["phases"][0]["resumed_from"].endswith("checkpoint-3")
    assert json.loads((phase_dir / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6
    actual = load_file(str(resumed / "model.safetensors"))
    bias_moved = (actual["mlm_head.bias"] - 5.0).abs()
    assert float(bias_moved.max()) < 0.1, "the resumed run did not start from checkpoint-3"
    assert float(bias_moved.max()) > 1e-4, "the resumed run did not train"


@pytest.mark.skipif(importlib.util.find_spec("aclsum") is None, reason="aclsum is not installed")
def test_aclsum_builtin_text(tmp_path: Path) -> None:
    config = PretrainConfig(
        encoder="tiny",
        dataset="aclsum",
        max_documents=2,
        output_dir=str(tmp_path / "out"),
        max_length=64,
        max_steps=1,
        save_steps=1,
        gradient_checkpointing=False,
    )
    docs = load_documents(config)
    assert len(docs) == 2 and min(map(len, docs)) > 5000
    assert run_pretraining(config).is_dir()


# ----------------------------------------------------------------------------------------------
# command line


def _cli(*args: str):
    from typer.testing import CliRunner

    from mega2bart.cli import app

    return CliRunner().invoke(app, ["pretrain", *args])


def test_cli_pretrain_runs(text_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    config = tmp_path / "pretrain.yaml"
    config.write_text(f"encoder: tiny\ntext_files: [{text_dir}]\nlearning_rate: 0.003\nmax_length: 32\n")
    result = _cli(
        "--config",
        str(config),
        "--output-dir",
        str(out),
        "--phases",
        "64:0.4:2,128:0.3:1",
        "--max-steps",
        "3",
        "--batch-size",
        "2",
        "--no-gradient-checkpointing",
        "--seed",
        "1",
        "--quiet",
    )
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "phase 2: length 128, mask 0.3, 1 steps" in result.output
    assert (out / "final" / "model.safetensors").is_file()
    saved = json.loads(json.dumps(__import__("yaml").safe_load((out / "pretrain_config.yaml").read_text())))
    assert saved["learning_rate"] == 0.003 and saved["seed"] == 1 and saved["gradient_checkpointing"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--encoder", "tiny", "--dataset", "aclsum", "--phases", "64-0.4"], "not length:mask_ratio"),
        (["--encoder", "tiny", "--text-files", "no/such/file.txt"], "does not exist"),
        (["--encoder", "tiny", "--dataset", "aclsum", "--mask-ratio", "1.2"], "mask ratio (1.2) must be in (0, 1)"),
        (["--encoder", "tiny"], "no text to pretrain on"),
        (["--dataset", "aclsum"], "pass --encoder"),
        (["--config", "missing.yaml"], "does not exist"),
        (["--encoder", "./no_such_dir", "--dataset", "aclsum"], "not a model directory"),
    ],
)
def test_cli_pretrain_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = _cli(*args, "--output-dir", str(tmp_path / "out"))
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert message in result.output
