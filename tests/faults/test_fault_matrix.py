"""The fault matrix: every command given damaged, missing, empty, malformed or wrong-kind input, and settings out
of range or of the wrong type, must end with the CLI's error exit code and one message that names the file or
setting, with no traceback, and must leave the user's files as they were. The summary line (conftest.py) counts
the cases, the one-line errors, the tracebacks and the cases that changed a user file; README's reliability
paragraph quotes it. Kills at awkward moments have their own tests (tests/test_builder.py: a save killed
mid-write and mid-replacement; tests/test_training.py: resume after a kill mid-checkpoint; tests/test_summarize.py
and tests/test_distributed.py: the multi-process paths)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

from .conftest import OUTCOMES
from .damage import KINDS, MEGA_VALUES, MODEL_VALUES, damage, damage_config, pickle_only, shrink_vocabulary

DAMAGES = ("missing", "empty-dir", *(kind for kind in KINDS if kind != "generation-malformed"))
MODEL_COMMANDS = {
    "info": lambda m, t: ["info", m],
    "eval": lambda m, t: ["eval", m, "--dataset", "aclsum", "--limit", "1", "--output-dir", t / "out"],
    "summarize": lambda m, t: ["summarize", m, t / "doc.txt", "--output", t / "out.txt"],
    "train": lambda m, t: ["train", "--model", m, "--dataset", "aclsum", "--output-dir", t / "out", "--max-steps", "1"],
    "build-encoder": lambda m, t: ["build", t / "out", "--encoder", m, "--preset", "tiny"],
    "pretrain": lambda m, t: ["pretrain", "--encoder", m, "--text-files", t / "text.txt", "--output-dir", t / "out"],
    "fill-mask": lambda m, t: ["fill-mask", "Hello <mask>.", "--model", m],
    "plan": lambda m, t: ["plan", m],
}
ENCODER_READERS = ("build-encoder", "pretrain", "fill-mask")  # the commands that read a bare MEGA folder
CONFIG_READERS = ("info", "plan", "eval", "summarize", "train")  # ... and a mega2bart model's config.json
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
        "train curriculum malformed": ([*train, "--curriculum", "2048"], "curriculum"),
        "train curriculum not below": ([*train, "--curriculum", "16384:10"], "max_source_length"),
        "train curriculum nan": ([*train, "--curriculum", "2048:10:nan"], "STOP_LOSS"),
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
    # hard links: the session's one tiny model, not a copy per case (a command that wrote into it would change
    # the digests all the same)
    shutil.copytree(tiny_mega2bart_dir, tmp_path / "model", copy_function=os.link)
    shutil.copytree(tiny_mega_encoder_dir, tmp_path / "encoder", copy_function=os.link)
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


@pytest.mark.parametrize(
    ("command", "damage"),
    [
        (c, d) for c in MODEL_COMMANDS for d in DAMAGES if not (c == "plan" and d.startswith("weights"))
    ],  # plan: config only
)
def test_damaged_model_directory(workspace: Path, command: str, damage: str) -> None:
    source = "encoder" if command in ENCODER_READERS else "model"
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
    """The matrix holds at least 250 cases over every command and every family of faults."""
    p, t = Path(), Path()
    families = {
        "damaged model folders": len(MODEL_COMMANDS) * len(DAMAGES) - 3,  # plan reads no weights
        "dataset files": len(DATA_COMMANDS) * len(DATA_FAULTS),
        "settings": len(_settings(p, t)),
        "unwritable outputs": 5,
        "config.json values": len(CONFIG_READERS) * len({**MEGA_VALUES, **MODEL_VALUES})
        + (1 + len(ENCODER_READERS)) * len(MEGA_VALUES),
        "pickle weights": len(MODEL_COMMANDS) - 1,
        "vocabulary below the tokenizer": 6 + len(ENCODER_READERS),
        "text not valid Unicode": len(_unicode_cases(p, p, t)),
        "settings of the wrong shape": len(_shapes(p, t)),
        "the machine's faults": 2 * len(_outputs(p, t, p)) + 3 + 1 + 4,
    }
    assert sum(families.values()) >= 250, families
    commands = {args[0] for args, _ in _settings(p, t).values()} | {"info", "eval", "train", "plan"}
    assert commands >= {"build", "info", "train", "eval", "summarize", "pretrain", "fill-mask", "plan"}
    assert json.dumps(DAMAGES)  # the kinds of damage are plain names, listed in the test ids


# ----------------------------------------------------------------------------- config.json values


@pytest.mark.parametrize("kind", [*MEGA_VALUES, *MODEL_VALUES])
@pytest.mark.parametrize("command", CONFIG_READERS)
def test_model_config_value(workspace: Path, command: str, kind: str) -> None:
    """A config.json value of the wrong type or out of range, in a mega2bart model: refused by name before
    anything is built, by every command that reads the model."""
    path = damage_config(workspace / "model", workspace / "bad-model", kind)
    named = {**MEGA_VALUES, **MODEL_VALUES}[kind][1]
    _check(workspace, MODEL_COMMANDS[command](path, workspace), named)


@pytest.mark.parametrize("kind", MEGA_VALUES)
@pytest.mark.parametrize("command", ["info", *ENCODER_READERS])
def test_encoder_config_value(workspace: Path, command: str, kind: str) -> None:
    """The same in a bare MEGA folder (an encoder to build from, pretrain or fill masks with)."""
    path = damage_config(workspace / "encoder", workspace / "bad-encoder", kind)
    _check(workspace, MODEL_COMMANDS[command](path, workspace), MEGA_VALUES[kind][1])


@pytest.mark.parametrize("command", [c for c in MODEL_COMMANDS if c != "plan"])
def test_pickle_weights(workspace: Path, command: str) -> None:
    """Weights only in a pytorch_model.bin that pickles more than tensors: refused in one line, nothing run."""
    source = "encoder" if command in ENCODER_READERS else "model"
    path = pickle_only(workspace / source, workspace / f"pickled-{source}")
    _check(workspace, MODEL_COMMANDS[command](path, workspace), "pytorch_model.bin")


@pytest.fixture(scope="session")
def shrunk_models(tmp_path_factory, tiny_mega2bart_dir: Path, tiny_mega_encoder_dir: Path) -> dict[str, Path]:
    """Models whose token embeddings were resized below their tokenizer (1,000 rows for 50,265 tokens), once per
    session: {"encoder": a mega2bart model with a small encoder table, "decoder": ... decoder, "": a bare MEGA}."""
    root = tmp_path_factory.mktemp("shrunk")
    return {
        "encoder": shrink_vocabulary(tiny_mega2bart_dir, root / "encoder-part", "encoder"),
        "decoder": shrink_vocabulary(tiny_mega2bart_dir, root / "decoder-part", "decoder"),
        "": shrink_vocabulary(tiny_mega_encoder_dir, root / "mega", ""),
    }


@pytest.mark.parametrize(
    ("command", "part"),
    [(c, p) for c in ("summarize", "eval", "train") for p in ("encoder", "decoder")]
    + [(c, "") for c in ENCODER_READERS],
)
def test_vocabulary_below_tokenizer(workspace: Path, shrunk_models: dict[str, Path], command: str, part: str) -> None:
    """Token ids past the end of the embedding table were an IndexError mid-run: refused by name at load."""
    path = workspace / "shrunk"
    shutil.copytree(shrunk_models[part], path, copy_function=os.link)
    named = "vocab_size" if command == "pretrain" else "embedding rows"
    _check(workspace, MODEL_COMMANDS[command](path, workspace), named)


# ----------------------------------------------------------------------------- text that is not valid Unicode


def _unicode_cases(model: Path, encoder: Path, t: Path) -> dict[str, tuple[list, str]]:
    """(arguments, what the message must name); the files are written by `_unicode_files`."""
    name = os.fsdecode(b"na\xefve.txt")
    data = ["--dataset", t / "surrogate-data.jsonl", "--output-dir", t / "out"]
    return {
        "summarize surrogate in text": (["summarize", model, t / "surrogate.jsonl", "--output", t / "o.jsonl"],
                                        "surrogate.jsonl:1"),
        "summarize surrogate in id": (["summarize", model, t / "surrogate-id.jsonl", "--output", t / "o.jsonl"],
                                      "surrogate-id.jsonl:1"),
        "summarize file name not UTF-8": (["summarize", model, t / name, "--output", t / "o.jsonl"], "na\\xefve"),
        "summarize bytes not UTF-8": (["summarize", model, t / "latin1.txt", "--output", t / "o.jsonl"], "latin1.txt"),
        "eval surrogate in text": (["eval", model, "--split", "train", *data], "surrogate-data.jsonl"),
        "train surrogate in text": (["train", "--model", model, "--eval-split", "none", "--max-steps", "1", *data],
                                    "surrogate-data.jsonl"),
        "fill-mask byte not UTF-8": (["fill-mask", "Hello \udcff <mask>.", "--model", encoder], "0xff"),
        "fill-mask surrogate": (["fill-mask", "Hello \ud800 <mask>.", "--preset", "tiny"], "surrogate"),
        "pretrain bytes not UTF-8": (["pretrain", "--encoder", encoder, "--text-files", t / "latin1.txt",
                                      "--output-dir", t / "out"], "latin1.txt"),
        "pretrain file name not UTF-8": (["pretrain", "--encoder", encoder, "--text-files", t / name,
                                          "--output-dir", t / "out"], "na\\xefve"),
        "pretrain surrogate in jsonl": (["pretrain", "--encoder", encoder, "--text-files", t / "surrogate.jsonl",
                                         "--output-dir", t / "out"], "surrogate.jsonl:1"),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_unicode_cases(Path(), Path(), Path())))
def test_text_not_valid_unicode(workspace: Path, case: str) -> None:
    (workspace / "surrogate.jsonl").write_text('{"id": "a", "text": "bad \\ud800 text here"}\n', encoding="utf-8")
    (workspace / "surrogate-id.jsonl").write_text('{"id": "\\udc80", "text": "fine text"}\n', encoding="utf-8")
    rows = '{"document": "bad \\ud800 text", "summary": "s"}\n{"document": "a b", "summary": "t"}\n'
    (workspace / "surrogate-data.jsonl").write_text(rows, encoding="utf-8")
    (workspace / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me, a document. ".encode("latin-1") * 5)
    (workspace / os.fsdecode(b"na\xefve.txt")).write_text("A short document. It has two sentences.")
    args, named = _unicode_cases(workspace / "model", workspace / "encoder", workspace)[case]
    _check(workspace, args, named)


# ----------------------------------------------------------------------------- --set and YAML values of the wrong shape


def _shapes(model: Path, t: Path) -> dict[str, tuple[list, str]]:
    train = ["train", "--model", model, "--dataset", "aclsum", "--output-dir", t / "out", "--max-steps", "1"]
    pretrain = ["pretrain", "--encoder", "tiny", "--text-files", t / "text.txt", "--output-dir", t / "out"]
    return {
        "train extra_training_args 5": ([*train, "--set", "extra_training_args=5"], "extra_training_args"),
        "train lr_scheduler_kwargs 5": ([*train, "--set", "extra_training_args={lr_scheduler_kwargs: 5}"],
                                        "lr_scheduler_kwargs"),
        "train lr_scheduler_kwargs list": ([*train, "--set", "extra_training_args={lr_scheduler_kwargs: [1]}"],
                                           "lr_scheduler_kwargs"),
        "train config lr_scheduler_kwargs 5": ([*train, "--config", t / "kwargs.yaml"], "lr_scheduler_kwargs"),
        "train freeze list": ([*train, "--set", "freeze=[encoder]"], "freeze"),
        "train eval_split mapping": ([*train, "--set", "eval_split={a: 1}"], "eval_split"),
        "train max_steps list": ([*train, "--set", "max_steps=[1]"], "max_steps"),
        "pretrain text_files 5": ([*pretrain, "--set", "text_files=5"], "text_files"),
        "pretrain phases list": ([*pretrain, "--set", "phases=[1, 2]"], "phases"),
        "pretrain mask_ratio mapping": ([*pretrain, "--set", "mask_ratio={a: 1}"], "mask_ratio"),
    }  # fmt: skip


@pytest.mark.parametrize("case", list(_shapes(Path(), Path())))
def test_setting_of_the_wrong_shape(workspace: Path, case: str) -> None:
    (workspace / "kwargs.yaml").write_text("extra_training_args:\n  lr_scheduler_kwargs: 5\n", encoding="utf-8")
    args, named = _shapes(workspace / "model", workspace)[case]
    _check(workspace, args, named)


# ----------------------------------------------------------------------------- the machine's faults


def _outputs(model: Path, t: Path, out: Path) -> dict[str, list]:
    """Each writing command with its output at `out` (a file for summarize, a folder for the others)."""
    return {
        "build": ["build", out, "--preset", "tiny"],
        "summarize": ["summarize", model, t / "doc.txt", "--output", out],
        "eval": ["eval", model, "--dataset", "aclsum", "--limit", "1", "--output-dir", out],
        "train": ["train", "--model", model, "--dataset", "aclsum", "--output-dir", out, "--max-steps", "1",
                  "--eval-split", "none"],
        "pretrain": ["pretrain", "--encoder", "tiny", "--text-files", t / "text.txt", "--output-dir", out,
                     "--max-steps", "1", "--max-length", "64"],
    }  # fmt: skip


@pytest.mark.parametrize("command", list(_outputs(Path(), Path(), Path())))
def test_output_is_a_symlink_loop(workspace: Path, command: str) -> None:
    """An output path that is a loop of symbolic links (ELOOP): one line naming it, nothing written."""
    loop = workspace / "loop"
    loop.symlink_to(loop.name)
    _check(workspace, _outputs(workspace / "model", workspace, loop)[command], "loop")


def test_output_device_full(workspace: Path) -> None:
    """`--output /dev/full`: every write fails with ENOSPC (no root needed)."""
    if not Path("/dev/full").exists():
        pytest.skip("this system has no /dev/full")
    _check(workspace, ["summarize", workspace / "model", workspace / "doc.txt", "--output", "/dev/full"], "/dev/full")


def test_eval_result_path_is_a_folder(workspace: Path) -> None:
    """A folder where eval_results.json goes (EISDIR at the very end): one line, no partial file left."""
    (workspace / "out" / "eval_results.json").mkdir(parents=True)
    _check(workspace, _outputs(workspace / "model", workspace, workspace / "out")["eval"], "eval_results.json")
    assert not list((workspace / "out").glob(".*.partial"))


def test_overwrite_keeps_a_checkpoint_link_target(workspace: Path) -> None:
    """`train --overwrite` over a run whose checkpoint folder is a symbolic link out of --output-dir: refused
    before anything is deleted, the folder it points to untouched."""
    elsewhere = workspace / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the run's", encoding="utf-8")
    run = workspace / "out"
    run.mkdir()
    (run / "train_config.yaml").write_text(f"model: {workspace / 'model'}\n", encoding="utf-8")
    (run / "checkpoint-1").symlink_to(elsewhere)
    args = [*_outputs(workspace / "model", workspace, run)["train"], "--overwrite"]
    _check(workspace, args, "checkpoint-1")
    assert (run / "train_config.yaml").is_file() and (run / "checkpoint-1").is_symlink()


@pytest.fixture
def mount_tmpfs():
    """Mount a small tmpfs (root only; skipped with the reason otherwise); unmounted after the test.
    `mount(path, size, fill=True)` fills it to the last byte; `read_only(path)` remounts it read-only."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "256k", fill: bool = False) -> Path:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("a small or read-only file system needs root to mount a tmpfs")
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
        if done.returncode:
            pytest.skip(f"mount -t tmpfs failed here: {done.stderr.decode().strip()}")
        mounted.append(path)
        if fill:
            with contextlib.suppress(OSError), (path / ".filler").open("wb") as fh:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
        return path

    def read_only(path: Path) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)

    mount.read_only = read_only  # type: ignore[attr-defined]
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("command", list(_outputs(Path(), Path(), Path())))
def test_full_file_system(workspace: Path, mount_tmpfs, command: str) -> None:
    """A full file system under the output (ENOSPC): one line naming the path; build and eval leave no partial
    output (they write to hidden files that are removed), the others a resumable one."""
    disk = mount_tmpfs(workspace / "out", fill=True)
    target = disk / ("s.jsonl" if command == "summarize" else "result")
    _check(workspace, _outputs(workspace / "model", workspace, target)[command], "ENOSPC")
    if command in ("build", "eval"):
        assert [p.name for p in disk.rglob("*") if p.is_file()] == [".filler"]


def test_full_disk_mid_record_resumes(workspace: Path, mount_tmpfs) -> None:
    """The disk fills while a group of summaries is written (a record cut in the middle): one line naming the
    output; with space again, `--skip-existing` finishes every document exactly once."""
    docs = workspace / "docs.jsonl"
    long_id = "d" * 300
    docs.write_text("".join(json.dumps({"id": f"{long_id}{i}", "text": f"Document {i}. It is short."}) + "\n"
                            for i in range(24)), encoding="utf-8")  # fmt: skip
    disk = mount_tmpfs(workspace / "out", size="8k")
    output = disk / "s.jsonl"
    args = ["summarize", workspace / "model", docs, "--output", output, "--max-new-tokens", "2", "--num-beams", "1",
            "--min-new-tokens", "0", "--batch-size", "4"]  # fmt: skip
    _check(workspace, args, "ENOSPC")
    assert not output.read_bytes().endswith(b"\n")  # a record was cut
    subprocess.run(["mount", "-o", "remount,size=1m", str(disk)], check=True)
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--skip-existing"]])
    assert result.exit_code == 0, result.output
    ids = [json.loads(line)["id"] for line in output.read_text(encoding="utf-8").splitlines()]
    assert sorted(ids) == sorted(f"{long_id}{i}" for i in range(24))


@pytest.mark.parametrize("case", ["summarize skip-existing", "summarize overwrite", "build overwrite", "train"])
def test_read_only_file_system(workspace: Path, mount_tmpfs, case: str) -> None:
    """A read-only file system (EROFS) under an output that exists (resumed or replaced) or a new one."""
    disk = mount_tmpfs(workspace / "ro", size="64m")
    model = workspace / "model"
    summarize = ["summarize", model, workspace / "doc.txt", "--output", disk / "s.jsonl", "--max-new-tokens", "2"]
    if case.startswith("summarize"):
        assert CliRunner().invoke(app, [str(a) for a in summarize]).exit_code == 0
        (workspace / "doc2.txt").write_text("Another document, not summarised yet.", encoding="utf-8")
        summarize.insert(3, workspace / "doc2.txt")
    if case == "build overwrite":
        (disk / "model").mkdir()
        (disk / "model" / "old.txt").write_text("an earlier build", encoding="utf-8")
    mount_tmpfs.read_only(disk)
    args = {
        "summarize skip-existing": [*summarize, "--skip-existing"],
        "summarize overwrite": [*summarize, "--overwrite"],
        "build overwrite": ["build", disk / "model", "--preset", "tiny", "--overwrite"],
        "train": _outputs(model, workspace, disk / "run")["train"],
    }[case]
    _check(workspace, args, "read-only")
