"""The fault matrix: every command given damaged, missing, empty, malformed or wrong-kind input, and settings out
of range or of the wrong type, must end with the CLI's error exit code and one message that names the file or
setting, with no traceback, and must leave the user's files as they were. The summary line (conftest.py) counts
the cases, the one-line errors, the tracebacks and the cases that changed a user file; README's reliability
paragraph quotes it. Kills at awkward moments have their own tests (tests/test_builder.py: a save killed
mid-write and mid-replacement; tests/test_training.py: resume after a kill mid-checkpoint; tests/test_summarize.py
and tests/test_distributed.py: the multi-process paths)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

from .conftest import OUTCOMES
from .damage import KINDS, damage

DAMAGES = ("missing", "empty-dir", *(kind for kind in KINDS if kind != "generation-malformed"))
MODEL_COMMANDS = {
    "info": lambda m, t: ["info", m],
    "eval": lambda m, t: ["eval", m, "--dataset", "aclsum", "--limit", "1", "--output-dir", t / "out"],
    "summarize": lambda m, t: ["summarize", m, t / "doc.txt", "--output", t / "out.txt"],
    "train": lambda m, t: ["train", "--model", m, "--dataset", "aclsum", "--output-dir", t / "out", "--max-steps", "1"],
    "build-encoder": lambda m, t: ["build", t / "out", "--encoder", m, "--preset", "tiny"],
    "pretrain": lambda m, t: ["pretrain", "--encoder", m, "--text-files", t / "text.txt", "--output-dir", t / "out"],
    "fill-mask": lambda m, t: ["fill-mask", "Hello <mask>.", "--model", m],
}
DATA_FAULTS = {
    "missing": ("nope.jsonl", None),
    "empty": ("empty.jsonl", ""),
    "malformed": ("bad.jsonl", '{"document": "a", "summary": \n'),
    "not-objects": ("list.jsonl", "[1, 2]\n"),
    "wrong-kind": ("data.yaml", "document: a\n"),
    "all-empty": ("blank.jsonl", '{"document": "", "summary": "s"}\n{"document": " ", "summary": "t"}\n'),
    "no-column": ("cols.jsonl", '{"text": "a b c", "abstract": "a"}\n'),
}
DATA_COMMANDS = {
    "train": lambda d, m, t: ["train", "--model", m, "--dataset", d, "--output-dir", t / "out", "--max-steps", "1",
                              "--eval-split", "none"],
    "eval": lambda d, m, t: ["eval", m, "--dataset", d, "--split", "train", "--output-dir", t / "out"],
}  # fmt: skip


def _settings(model: Path, t: Path) -> dict[str, tuple[list, str]]:
    """Out-of-range and wrong-type settings: (arguments, what the message must name)."""
    train = ["train", "--model", model, "--dataset", "aclsum", "--output-dir", t / "out"]
    eval_ = ["eval", model, "--dataset", "aclsum", "--output-dir", t / "out"]
    summarize = ["summarize", model, t / "doc.txt", "--output", t / "out.txt"]
    pretrain = ["pretrain", "--encoder", "tiny", "--text-files", t / "text.txt", "--output-dir", t / "out"]
    build = ["build", t / "out"]
    return {
        "train max-steps 0": ([*train, "--max-steps", "0"], "max_steps"),
        "train max-steps text": ([*train, "--max-steps", "ten"], "max-steps"),
        "train learning-rate -1": ([*train, "--learning-rate", "-1"], "learning"),
        "train batch-size 0": ([*train, "--batch-size", "0"], "batch"),
        "train max-source-length 1": ([*train, "--max-source-length", "1"], "source"),
        "train label-smoothing 2": ([*train, "--label-smoothing", "2"], "label"),
        "train set unknown": ([*train, "--set", "no_such_setting=1"], "no_such_setting"),
        "train set wrong type": ([*train, "--set", "max_steps=many"], "max_steps"),
        "train set no equals": ([*train, "--set", "max_steps"], "max_steps"),
        "train stop_at_loss 0": ([*train, "--set", "stop_at_loss=0"], "stop_at_loss"),
        "train freeze unknown": ([*train, "--freeze", "everything"], "freeze"),
        "train config missing": ([*train, "--config", t / "none.yaml"], "none.yaml"),
        "train config malformed": ([*train, "--config", t / "bad.yaml"], "bad.yaml"),
        "train config unknown key": ([*train, "--config", t / "unknown.yaml"], "no_such_key"),
        "train config list": ([*train, "--config", t / "list.yaml"], "list.yaml"),
        "eval num-beams 0": ([*eval_, "--num-beams", "0"], "num-beams"),
        "eval max-new-tokens 0": ([*eval_, "--max-new-tokens", "0"], "max-new-tokens"),
        "eval min above max": ([*eval_, "--min-new-tokens", "9", "--max-new-tokens", "3"], "min_new_tokens"),
        "eval length-penalty nan": ([*eval_, "--length-penalty", "nan"], "length_penalty"),
        "eval limit 0": ([*eval_, "--limit", "0"], "limit"),
        "eval split unknown": ([*eval_, "--split", "nosuch"], "nosuch"),
        "eval dtype unknown": ([*eval_, "--dtype", "fp8"], "fp8"),
        "eval max-input-tokens 1": ([*eval_, "--max-input-tokens", "1"], "max-input-tok"),
        "summarize num-beams 0": ([*summarize, "--num-beams", "0"], "num-beams"),
        "summarize length-penalty inf": ([*summarize, "--length-penalty", "inf"], "length_penalty"),
        "summarize no-repeat -1": ([*summarize, "--no-repeat-ngram-size", "-1"], "no-repeat"),
        "summarize merge unknown": ([*summarize, "--merge", "shuffle"], "shuffle"),
        "summarize overlap negative": ([*summarize, "--window-overlap", "-5"], "overlap"),
        "summarize dtype fp16 on cpu": ([*summarize, "--dtype", "fp16"], "fp16"),
        "summarize missing document": (["summarize", model, t / "nodoc.txt", "--output", t / "o.txt"], "nodoc.txt"),
        "summarize empty folder": (["summarize", model, t / "emptydocs", "--output", t / "o.txt"], "emptydocs"),
        "pretrain max-steps 0": ([*pretrain, "--max-steps", "0"], "max_steps"),
        "pretrain mask-ratio 1.5": ([*pretrain, "--mask-ratio", "1.5"], "mask"),
        "pretrain phases malformed": ([*pretrain, "--phases", "abc"], "abc"),
        "pretrain max-length 0": ([*pretrain, "--max-length", "0"], "max-length"),
        "pretrain missing text": (["pretrain", "--encoder", "tiny", "--text-files", t / "none.txt"], "none.txt"),
        "build preset unknown": ([*build, "--preset", "huge"], "huge"),
        "build num-beams 0": ([*build, "--preset", "tiny", "--num-beams", "0"], "num-beams"),
        "build max-new-tokens 0": ([*build, "--preset", "tiny", "--max-new-tokens", "0"], "max-new-tokens"),
        "build min above max": ([*build, "--preset", "tiny", "--min-new-tokens", "99", "--max-new-tokens", "9"],
                                "min_new_tokens"),
        "build max-input-length 0": ([*build, "--preset", "tiny", "--max-input-length", "0"], "max-input-length"),
        "build encoder is a file": ([*build, "--encoder", t / "doc.txt", "--preset", "tiny"], "doc.txt"),
        "build into a file": (["build", t / "doc.txt", "--preset", "tiny"], "doc.txt"),
        "fill-mask no mask": (["fill-mask", "no mask here", "--preset", "tiny"], "mask"),
        "fill-mask top-k 0": (["fill-mask", "Hello <mask>.", "--preset", "tiny", "--top-k", "0"], "top-k"),
    }  # fmt: skip


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "out" not in p.relative_to(root).parts[:1]
    }


@pytest.fixture
def workspace(tmp_path: Path, tiny_mega2bart_dir: Path, tiny_mega_encoder_dir: Path) -> Path:
    (tmp_path / "doc.txt").write_text("A short document. It has two sentences.", encoding="utf-8")
    (tmp_path / "text.txt").write_text("Some raw text to pretrain on. " * 20, encoding="utf-8")
    (tmp_path / "emptydocs").mkdir()
    (tmp_path / "bad.yaml").write_text("max_steps: [1\n", encoding="utf-8")
    (tmp_path / "unknown.yaml").write_text("no_such_key: 1\n", encoding="utf-8")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    for name, text in DATA_FAULTS.values():
        if text is not None:
            (tmp_path / name).write_text(text, encoding="utf-8")
    shutil.copytree(tiny_mega2bart_dir, tmp_path / "model")
    shutil.copytree(tiny_mega_encoder_dir, tmp_path / "encoder")
    return tmp_path


def _damaged(workspace: Path, kind: str, source: str) -> Path:
    return damage(workspace / source, workspace / f"damaged-{source}", kind)


def _check(workspace: Path, args: list, names: str) -> None:
    """Run the command; record and assert its outcome."""
    before = _digests(workspace)
    result = CliRunner().invoke(app, [str(a) for a in args])
    output = result.output
    traceback = "Traceback" in output or (result.exception is not None and not isinstance(result.exception, SystemExit))
    # one message: a single "error:" line of ours, or typer's usage box around its single message line
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    usage = [line for line in output.splitlines() if "Invalid value" in line or "No such option" in line]
    message = errors[0] if len(errors) == 1 else " ".join(output.split()) if usage and not errors else None
    changed = _digests(workspace) != before
    one_line = result.exit_code == ERROR_EXIT_CODE and message is not None and not traceback
    OUTCOMES.append({"one_line": one_line, "traceback": traceback, "changed": changed})
    assert not traceback, (args, repr(result.exception), output[-2000:])
    assert result.exit_code == ERROR_EXIT_CODE and message is not None, (result.exit_code, output[-2000:])
    assert names.lower().replace("-", "_") in message.lower().replace("-", "_"), (names, message)
    assert not changed, "a user file changed"


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_damaged_model_directory(workspace: Path, command: str, damage: str) -> None:
    source = "encoder" if command in ("build-encoder", "pretrain", "fill-mask") else "model"
    path = _damaged(workspace, damage, source)
    named = {"config-malformed": "config.json", "config-list": "config.json"}.get(damage, path.name)
    if damage.startswith("weights"):
        named = "model.safetensors"
    _check(workspace, MODEL_COMMANDS[command](path, workspace), named)


@pytest.mark.parametrize("fault", DATA_FAULTS)
@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_bad_dataset_file(workspace: Path, command: str, fault: str) -> None:
    name, _ = DATA_FAULTS[fault]
    named = {"no-column": "document", "all-empty": "no example left"}.get(fault, name)
    _check(workspace, DATA_COMMANDS[command](workspace / name, workspace / "model", workspace), named)


@pytest.mark.parametrize("case", list(_settings(Path("m"), Path("t"))))
def test_setting_out_of_range_or_wrong_type(workspace: Path, case: str) -> None:
    args, named = _settings(workspace / "model", workspace)[case]
    _check(workspace, args, named)


@pytest.mark.parametrize("command", ["build", "train", "eval", "summarize", "pretrain"])
def test_output_location_that_cannot_be_written(workspace: Path, command: str) -> None:
    """An output path under a file (not a folder): unwritable whoever runs it, root included."""
    blocked = workspace / "doc.txt" / "out"
    args = {
        "build": ["build", blocked, "--preset", "tiny"],
        "train": ["train", "--model", workspace / "model", "--dataset", "aclsum", "--output-dir", blocked,
                  "--max-steps", "1"],
        "eval": ["eval", workspace / "model", "--dataset", "aclsum", "--limit", "1", "--output-dir", blocked],
        "summarize": ["summarize", workspace / "model", workspace / "doc.txt", "--output", blocked / "s.txt"],
        "pretrain": ["pretrain", "--encoder", "tiny", "--text-files", workspace / "text.txt", "--output-dir", blocked],
    }[command]  # fmt: skip
    _check(workspace, args, "doc.txt")


def test_matrix_size() -> None:
    """The matrix holds at least 100 cases over every command."""
    cases = len(MODEL_COMMANDS) * len(DAMAGES) + len(DATA_COMMANDS) * len(DATA_FAULTS) + len(_settings(Path(), Path()))
    cases += 5  # unwritable output locations
    assert cases >= 100, cases
    commands = {args[0] for args, _ in _settings(Path(), Path()).values()} | {"info", "eval", "train"}
    assert commands >= {"build", "info", "train", "eval", "summarize", "pretrain", "fill-mask"}
    assert json.dumps(DAMAGES)  # the kinds of damage are plain names, listed in the test ids
