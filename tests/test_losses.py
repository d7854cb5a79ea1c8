"""The three ways a command lost the user's work (issue 34), each reproduced: a run folder that holds the model it
trains from, two writers of one output at once, and weights that are NaN or inf."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
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


# ----------------------------------------------------------------------------- 2. two writers of one output

HOLDER = """
import sys
from mega2bart.output_lock import hold_output
lock = hold_output(sys.argv[1], sys.argv[2], sys.argv[3])
print("held" if lock is not None else "not held", flush=True)
sys.stdin.read()  # holds the lock until the test closes stdin or kills it
"""
SUMMARIZE = ["--max-new-tokens", "4", "--num-beams", "1", "--no-plan-check", "--quiet"]


def _holder(output: Path, flag: str, command: str) -> subprocess.Popen:
    """Another process holding `output`'s lock, as a running `mega2bart COMMAND` would."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output), flag, command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def _documents(folder: Path, count: int) -> list[str]:
    folder.mkdir()
    for index in range(count):
        sentences = " ".join(f"Document {index} says point {point} about topic {index % 3}." for point in range(12))
        (folder / f"doc{index}.txt").write_text(sentences)
    return sorted(str(path) for path in folder.iterdir())


def _ids(output: Path) -> list[str]:
    return [json.loads(line)["id"] for line in output.read_text().splitlines()]


def test_summarize_refuses_an_output_another_process_writes_and_a_killed_one_leaves_no_stuck_lock(
    tiny_mega2bart_dir, tmp_path
):
    """Issue 34: two summarize runs with one --output both exited 0 and left every record twice."""
    documents = _documents(tmp_path / "docs", 3)
    output = tmp_path / "out" / "summaries.jsonl"  # its folder does not exist yet either
    holder = _holder(output, "--output", "summarize")
    args = ["summarize", str(tiny_mega2bart_dir), *documents, "--output", str(output), "--skip-existing", *SUMMARIZE]
    try:
        message = _refused(runner.invoke(app, args), "is being written by another process", "`mega2bart summarize`")
        assert f"pid {holder.pid} on {socket.gethostname()}, started 20" in message and "--output" in message
        assert not output.exists()
    finally:
        holder.kill()  # as a crash would: no release, the lock file stays behind
        holder.wait()
    assert (tmp_path / "out" / ".summaries.jsonl.lock").is_file()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(_ids(output)) == documents  # ids are the paths as given
    assert sorted(path.name for path in output.parent.iterdir()) == ["summaries.jsonl", "summaries.stats.json"]


def test_a_refused_run_leaves_no_lock_and_no_folder_behind(tiny_mega2bart_dir, tmp_path):
    """The lock's file, and the folders made for it, go when the command ends, also when it fails."""
    before = _files(tmp_path)
    output = tmp_path / "new" / "deeper" / "summaries.jsonl"
    args = ["summarize", str(tiny_mega2bart_dir), str(tmp_path / "missing.txt"), "--output", str(output), *SUMMARIZE]
    _refused(runner.invoke(app, args), "missing.txt")
    assert _files(tmp_path) == before and not (tmp_path / "new").exists()


@pytest.mark.parametrize("command", ["build", "train", "eval", "pretrain"])
def test_every_writing_command_refuses_an_output_folder_another_process_writes(
    tiny_mega2bart_dir, tiny_mega_encoder_dir, tmp_path, command
):
    output = tmp_path / "output"
    output.mkdir()
    (output / "notes.txt").write_text("the other run's")
    flag = "OUTPUT_DIR" if command == "build" else "--output-dir"
    args = {
        "build": ["build", str(output), "--preset", "tiny", "--random-init", "--overwrite"],
        "train": ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(output), *SHORT_RUN],
        "eval": ["eval", str(tiny_mega2bart_dir), "--output-dir", str(output), "--limit", "1", *SUMMARIZE],
        "pretrain": [
            "pretrain",
            "--encoder",
            str(tiny_mega_encoder_dir),
            "--output-dir",
            str(output),
            "--dataset",
            "aclsum",
        ],
    }[command]
    holder = _holder(output, flag, command)
    try:
        before = _files(tmp_path)
        message = _refused(runner.invoke(app, [*args, "--quiet"] if command != "train" else args), flag)
        assert f"(`mega2bart {command}`, pid {holder.pid} on " in message
        assert _files(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def test_only_the_first_process_of_a_launch_locks(tmp_path, monkeypatch):
    """Under torchrun every process writes its part of one run: RANK 0 holds the lock for all of them."""
    from mega2bart.output_lock import hold_output, lock_path

    monkeypatch.setenv("RANK", "1")
    assert hold_output(tmp_path / "out.jsonl", "--output", "summarize") is None
    monkeypatch.setenv("RANK", "0")
    lock = hold_output(tmp_path / "out.jsonl", "--output", "summarize")
    assert lock is not None and lock.path == lock_path(tmp_path / "out.jsonl") == tmp_path / ".out.jsonl.lock"
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock.path.exists()


@pytest.mark.e2e
def test_two_summarize_processes_at_once_write_each_document_once(tiny_mega2bart_dir, tmp_path):
    """Two real `mega2bart summarize --skip-existing` runs of one --output, started together: one writes, the other
    is refused naming it (or, if the first finished before it started, skips everything); never a record twice."""
    documents = _documents(tmp_path / "docs", 8)
    output = tmp_path / "summaries.jsonl"
    command = [sys.executable, "-m", "mega2bart.cli", "summarize", str(tiny_mega2bart_dir), *documents]
    command += ["--output", str(output), "--skip-existing", *SUMMARIZE]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.pid, *run.communicate(timeout=300), run.returncode) for run in runs]
    assert sorted(_ids(output)) == documents  # each document exactly once (ids are the paths as given)
    codes = sorted(code for *_, code in results)
    assert codes in ([0, 0], [0, ERROR_EXIT_CODE]), results
    for pid, _, stderr, code in results:
        if code == ERROR_EXIT_CODE:
            other = next(other for other, *_ in results if other != pid)
            assert f"is being written by another process (`mega2bart summarize`, pid {other} on" in stderr, stderr


# ----------------------------------------------------------------------------- 3. NaN / inf weights


def _mega_config_dir(folder: Path, **fields) -> Path:
    """A MEGA config alone (the builder initialises its weights) with `fields` on top of the tiny encoder's."""
    from mega2bart.models.mega import MegaConfig
    from mega2bart.presets import TINY_ENCODER

    MegaConfig(**TINY_ENCODER).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **fields}))  # Infinity, 10**400: as a user writes them
    return folder


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"ema_min_reach": float("inf")}, "ema_min_reach"),
        ({"ema_min_reach": float("nan")}, "ema_min_reach"),
        ({"ema_max_reach": 10**400}, "ema_max_reach"),
        ({"ema_max_reach": 2**40}, "ema_max_reach"),  # q = 1 - 1/reach is 1 in float32: the EMA never decays
        ({"ema_min_reach": 20000, "ema_init": "long"}, "ema_min_reach"),  # above max_positions (16384)
        ({"ema_min_reach": 50, "ema_max_reach": 20}, "ema_max_reach"),
    ],
)
def test_build_refuses_an_ema_reach_that_makes_nan_weights_or_an_empty_range(
    tmp_path, tiny_bart_decoder_dir, fields, name
):
    """Issue 34: `ema_min_reach: Infinity` or `ema_max_reach: 10**400` built and saved NaN/inf weights with exit 0."""
    encoder = _mega_config_dir(tmp_path / "encoder", **fields)
    out = tmp_path / "out"
    args = ["build", str(out), "--encoder", str(encoder), "--decoder", str(tiny_bart_decoder_dir), "--quiet"]
    _refused(runner.invoke(app, args), name, "config.json")  # the folder check (config_values)
    assert not out.exists()


@pytest.mark.parametrize(
    "fields",
    [{"ema_init": "long", "ema_min_reach": float("inf")}, {"ema_min_reach": float("nan")}, {"ema_max_reach": 10**400}],
)
def test_mega_config_refuses_a_reach_no_weight_can_hold(fields):
    from mega2bart.models.mega import MegaConfig
    from mega2bart.presets import TINY_ENCODER

    with pytest.raises(ValueError, match="MegaConfig.ema_m.._reach"):
        MegaConfig(**{**TINY_ENCODER, **fields})


def test_a_port_config_may_keep_a_min_reach_above_max_positions():
    """4.x configs (ema_init None) never use the reach settings: only the long init needs the range."""
    from mega2bart.models.mega import MegaConfig
    from mega2bart.presets import TINY_ENCODER

    assert MegaConfig(**{**TINY_ENCODER, "ema_min_reach": 20000}).ema_min_reach == 20000  # max_positions 16384
    with pytest.raises(ValueError, match="MegaConfig.ema_min_reach"):
        MegaConfig(**{**TINY_ENCODER, "ema_min_reach": 20000, "ema_init": "long"})


def test_the_builder_checks_the_reach_when_it_chooses_the_long_init():
    """A config without ema_init gets the long init from the builder: its reach range must then hold."""
    from mega2bart.builder import build_mega2bart
    from mega2bart.presets import TINY_DECODER, TINY_ENCODER

    with pytest.raises(ValueError, match=r"MegaConfig.ema_min_reach \(20000\) is above the longest reach"):
        build_mega2bart(encoder={**TINY_ENCODER, "ema_min_reach": 20000}, decoder=TINY_DECODER, tokenizer="offline")


def test_no_save_writes_a_nan_or_inf_weight_without_saying_so(tiny_mega2bart_dir, tmp_path):
    """The saves the commands make: save_mega2bart (build) and MegaPreTrainedModel.save_pretrained (pretrain; train
    through its Trainer, below)."""
    import torch

    from mega2bart.builder import load_mega2bart, save_mega2bart

    model, tokenizer = load_mega2bart(tiny_mega2bart_dir)
    with torch.no_grad():
        model.encoder.layers[0].mega_layer.ema_gate.damping_factor[0, 0, 0] = float("nan")
        model.decoder.model.decoder.layers[0].fc1.bias[:3] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf") as caught:
        save_mega2bart(model, tokenizer, tmp_path / "built")
    message = str(caught.value)
    assert "\n" not in message and "encoder.layers.0.mega_layer.ema_gate.damping_factor (1 of " in message
    assert "decoder.model.decoder.layers.0.fc1.bias (3 of " in message
    with pytest.raises(ValueError, match=r"NaN or inf: layers\.0\.mega_layer\.ema_gate\.damping_factor \(1 of "):
        model.encoder.save_pretrained(tmp_path / "encoder")
    assert list(tmp_path.iterdir()) == []  # nothing written
    model.encoder.save_pretrained(tmp_path / "kept", allow_nonfinite=True)  # the opt-in: a broken model kept on purpose
    assert (tmp_path / "kept" / "model.safetensors").is_file()
    save_mega2bart(model, tokenizer, tmp_path / "built", allow_nonfinite=True)


def test_train_refuses_to_save_a_checkpoint_with_nan_weights(tiny_mega2bart_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny_mega2bart_dir, model)
    weights = load_file(model / "model.safetensors")
    name = next(key for key in weights if key.endswith("ema_gate.damping_factor"))
    weights[name][0, 0, 0] = float("nan")  # as a diverged run leaves it
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    run = tmp_path / "run"
    args = ["train", "--model", str(model), "--output-dir", str(run), *SHORT_RUN]
    result = runner.invoke(app, args)
    # the weights were edited outside mega2bart: train says so (provenance) before the run, then refuses to save
    first, _, rest = result.output.partition("\n")
    assert first.startswith("WARNING mega2bart.builder.fingerprint:") and "did not record" in first, result.output
    result.output_bytes = rest.encode()  # `_refused` checks the rest: the one-line error
    _refused(result, "refusing to save", "weight tensor(s) hold NaN or inf: encoder.")
    assert not (run / "model.safetensors").exists() and not list(run.glob("checkpoint-*/model.safetensors"))
