"""The three ways a command lost the user's work (issue 34), each reproduced: a run folder that holds the model it
trains from, two writers of one output at once, and weights that are NaN or inf."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

runner = CliRunner()
# a run as short as it gets, so that a command that is not refused ends soon (and the test then fails)
SHORT_RUN = ["--max-steps", "1", "--max-train-samples", "1", "--max-source-length", "64", "--max-target-length", "8"]
SHORT_RUN += ["--set", "eval_split=null", "--no-plan-check", "--quiet"]


def _files(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (symlinks as their target text)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _refused(result, *needles: str) -> str:
    assert result.exit_code == ERROR_EXIT_CODE, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    message = result.output.strip()
    assert message.startswith("error: ") and "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ----------------------------------------------------------------------------- 1. the run folder holds its model


@pytest.fixture
def earlier_run(tiny_mega2bart_dir, tmp_path) -> Path:
    """A finished run's folder: its final model at the top, a checkpoint, and its train_config.yaml."""
    run = tmp_path / "run"
    shutil.copytree(tiny_mega2bart_dir, run)
    shutil.copytree(tiny_mega2bart_dir, run / "checkpoint-2")
    (run / "train_config.yaml").write_text(f"model: {tiny_mega2bart_dir}\noutput_dir: {run}\n")
    (run / "metrics.json").write_text("{}\n")
    return run


@pytest.mark.parametrize(
    "model, output, relation",
    [
        ("run", "run", "is the model"),  # continue from the run's final model into the same folder
        ("run/checkpoint-2", "run", "holds the model"),  # or from one of its checkpoints
        ("run", "run/continued", "is inside the model"),
        ("link", "run", "is the model"),  # a symlink to the run is the run
        ("run/checkpoint-2", "link", "holds the model"),
    ],
)
def test_train_overwrite_never_deletes_the_model_it_trains_from(earlier_run, model, output, relation):
    """Issue 34: `train --model RUN --output-dir RUN --overwrite` deleted the run, then failed ("has no config.json")."""
    base = earlier_run.parent
    (base / "link").symlink_to(earlier_run, target_is_directory=True)
    before = _files(base)
    args = ["train", "--model", str(base / model), "--output-dir", str(base / output), "--overwrite"]
    message = _refused(runner.invoke(app, [*args, *SHORT_RUN]), relation, "nothing was deleted")
    assert str(base / model) in message and "--output-dir" in message
    assert _files(base) == before  # every file of the run as it was


def test_train_into_the_folder_of_its_own_model_is_refused_without_overwrite_too(tiny_mega2bart_dir, tmp_path):
    """A built model trained in place would get checkpoints in it and its weights replaced by the trained ones."""
    model = tmp_path / "model"
    shutil.copytree(tiny_mega2bart_dir, model)
    before = _files(tmp_path)
    args = ["train", "--model", str(model), "--output-dir", str(model), *SHORT_RUN]
    _refused(runner.invoke(app, args), "is the model")
    assert _files(tmp_path) == before


def test_pretrain_refuses_an_output_dir_holding_its_encoder(tiny_mega_encoder_dir, tmp_path):
    run = tmp_path / "pretrain"
    shutil.copytree(tiny_mega_encoder_dir, run / "final")
    args = ["pretrain", "--encoder", str(run / "final"), "--output-dir", str(run), "--resume", "--quiet"]
    args += ["--phases", "32:0.3:1"]
    text = tmp_path / "text.txt"
    text.write_text("Some text to pretrain on. " * 50)
    before = _files(tmp_path)
    _refused(runner.invoke(app, [*args, "--text-files", str(text)]), "holds the model")
    assert _files(tmp_path) == before


def test_build_overwrite_refuses_a_source_inside_the_folder_it_replaces(
    tiny_mega2bart_dir, tiny_mega_encoder_dir, tiny_bart_decoder_dir, tmp_path
):
    """`build OUT --overwrite` replaces OUT whole: an encoder kept in OUT/ would be read, then deleted with it."""
    out = tmp_path / "out"
    shutil.copytree(tiny_mega2bart_dir, out)
    shutil.copytree(tiny_mega_encoder_dir, out / "encoder")
    before = _files(tmp_path)
    args = ["build", str(out), "--encoder", str(out / "encoder"), "--decoder", str(tiny_bart_decoder_dir)]
    _refused(runner.invoke(app, [*args, "--overwrite", "--quiet"]), "--encoder", "inside", "nothing was written")
    assert _files(tmp_path) == before


def test_build_overwrite_may_read_the_folder_it_replaces(tiny_mega2bart_dir, tmp_path):
    """The model is read whole before the new one replaces it (atomically): rebuilding OUT from its own tokenizer
    is safe."""
    out = tmp_path / "out"
    shutil.copytree(tiny_mega2bart_dir, out)
    args = ["build", str(out), "--preset", "tiny", "--random-init", "--tokenizer", str(out), "--overwrite", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
