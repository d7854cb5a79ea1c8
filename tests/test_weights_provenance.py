"""`mega2bart info` tells whether a folder's weights are those its build record fingerprinted (issue 30):
changes by plain torch/transformers, casts, tied weights, `.bin` folders, and `mega2bart train` before and after."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

NONE = "training since the build: none"
CHANGED = "changed after the build by a run mega2bart did not record"


def _info(path: Path) -> str:
    from mega2bart.cli import app

    result = CliRunner().invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    return result.output


def _info_json(path: Path) -> dict:
    from mega2bart.cli import app

    return json.loads(CliRunner().invoke(app, ["info", str(path), "--json"]).output)


def _plain_save(source: Path, target: Path, *, change: bool = False, dtype: torch.dtype | None = None) -> None:
    """What another tool does: load with transformers, maybe change a weight, save; no mega2bart record."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    model = AutoModelForSeq2SeqLM.from_pretrained(source)
    if change:
        with torch.no_grad():
            model.decoder.model.decoder.layers[0].fc1.weight[0, 0] += 0.5
    if dtype is not None:
        model.to(dtype)
    model.save_pretrained(target)


def test_info_says_when_weights_changed_after_the_build_by_another_tool(tiny_mega2bart_dir, tmp_path) -> None:
    assert NONE in _info(tiny_mega2bart_dir)
    _plain_save(tiny_mega2bart_dir, tmp_path / "same")
    assert NONE in _info(tmp_path / "same")
    assert _info_json(tmp_path / "same")["weights_check"] == {
        "status": "as recorded",
        "against": "the build",
        "detail": "",
    }

    _plain_save(tiny_mega2bart_dir, tmp_path / "changed", change=True)
    shown = _info(tmp_path / "changed")
    assert NONE not in shown and f"training since the build: {CHANGED}" in shown, shown
    assert _info_json(tmp_path / "changed")["weights_check"]["status"] == "changed"


def test_a_cast_is_recognised_as_the_built_weights_and_a_changed_cast_is_not(tiny_mega2bart_dir, tmp_path) -> None:
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        _plain_save(tiny_mega2bart_dir, tmp_path / name, dtype=dtype)
        assert f"{NONE} (the built weights, cast to {name})" in _info(tmp_path / name)
    _plain_save(tiny_mega2bart_dir, tmp_path / "changed-bf16", change=True, dtype=torch.bfloat16)
    assert CHANGED in _info(tmp_path / "changed-bf16")


def test_fingerprint_is_the_same_in_memory_and_on_disk_whatever_the_ties(tiny_mega2bart_dir, tmp_path) -> None:
    from mega2bart.builder import load_mega2bart, read_build_info
    from mega2bart.builder.fingerprint import folder_fingerprint, model_fingerprint

    record = read_build_info(tiny_mega2bart_dir).weights
    assert record["dtype"] == "float32" and set(record["casts"]) == {"bfloat16", "float16"}
    assert record["tied"], "the tiny model ties its decoder's embeddings and output layer: the test needs a tie"
    saved = load_file(tiny_mega2bart_dir / "model.safetensors")
    model, _ = load_mega2bart(tiny_mega2bart_dir)
    assert len(saved) < len(model.state_dict())  # the tied tensor is saved once
    assert model_fingerprint(model).fingerprint == record["fingerprint"]
    assert folder_fingerprint(tiny_mega2bart_dir, record["tied"]).fingerprint == record["fingerprint"]

    def folder_with(state: dict[str, torch.Tensor], name: str, *, bin_file: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tiny_mega2bart_dir / "config.json", folder)
        if bin_file:
            torch.save(state, folder / "pytorch_model.bin")
        else:
            save_file(state, str(folder / "model.safetensors"))
        return folder

    # every tied name saved (untied copies), the other name kept, a .bin with shared storage: all the same weights
    full = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for group in record["tied"]:
        kept = next(name for name in group if name in saved)
        other_name = {name: saved[name] for name in saved if name != kept} | {
            next(n for n in group if n != kept): saved[kept]
        }
        assert CHANGED not in _info(folder_with(other_name, "other-name"))
    assert NONE in _info(folder_with(full, "untied"))
    assert NONE in _info(folder_with(model.state_dict(), "bin", bin_file=True))

    # names count: two same-shaped tensors swapped are a change
    swapped = dict(saved)
    first, second = (n for n in saved if n.endswith("fc1.weight") and n.startswith("decoder."))
    swapped[first], swapped[second] = saved[second], saved[first]
    assert CHANGED in _info(folder_with(swapped, "swapped"))


def test_a_record_or_change_without_a_fingerprint_says_it_cannot_tell(tiny_mega2bart_dir, tmp_path) -> None:
    old = tmp_path / "old"
    shutil.copytree(tiny_mega2bart_dir, old)
    config = json.loads((old / "config.json").read_text())
    del config["mega2bart_build"]["weights"]  # a record written before fingerprints
    (old / "config.json").write_text(json.dumps(config))
    shown = _info(old)
    assert "training since the build: none recorded (the record has no weight fingerprint" in shown, shown
    assert "a later change by another tool would not show" in shown

    from mega2bart.builder import load_mega2bart, save_mega2bart

    model, tokenizer = load_mega2bart(tiny_mega2bart_dir)
    model.resize_token_embeddings(model.config.vocab_size + 8)  # recorded, but without a fingerprint
    save_mega2bart(model, tokenizer, tmp_path / "resized")
    shown = _info(tmp_path / "resized")
    assert "the last recorded change (resize_token_embeddings) has no weight fingerprint" in shown, shown
    assert "training since the build: none" not in shown


@pytest.mark.e2e
def test_mega2bart_train_records_the_change_it_found_and_its_own_run(tmp_path) -> None:
    """Training a model changed by another tool records that change before its own run; the output is "as
    recorded"; a later plain change of the output shows after the last run."""
    from mega2bart.builder.fingerprint import UNRECORDED
    from mega2bart.cli import app

    runner = CliRunner()
    built, changed, trained = tmp_path / "built", tmp_path / "changed", tmp_path / "trained"
    assert runner.invoke(app, ["build", str(built), "--preset", "tiny", "--quiet"]).exit_code == 0
    _plain_save(built, changed, change=True)
    result = runner.invoke(
        app,
        ["train", "--model", str(changed), "--dataset", "aclsum", "--output-dir", str(trained), "--max-steps", "1",
         "--eval-split", "none", "--max-source-length", "64", "--set", "max_train_samples=2", "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    described = _info_json(trained)
    assert [event.get("event") for event in described["training"]] == [UNRECORDED, None]
    assert described["training"][1]["global_step"] == 1 and described["weights_check"]["status"] == "as recorded"
    shown = _info(trained)
    assert "training since the build: 2 run(s)" in shown and f"event {UNRECORDED}" in shown, shown
    assert "then changed" not in shown

    _plain_save(trained, tmp_path / "after", change=True)
    assert "then changed after the last by a run mega2bart did not record" in _info(tmp_path / "after")


MISMATCH = "to instantiate a model of type"
"""transformers' warning when a config.json is read by a config class of another model type."""


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_loading_a_folders_tokenizer_or_config_logs_no_model_type_warning(tiny_mega2bart_dir, tmp_path) -> None:
    """After `import mega2bart`: the tokenizer and config of a built folder, a plain save of it and its encoder."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer, PretrainedConfig
    from transformers.utils import logging as transformers_logging

    from mega2bart.models.mega import MegaConfig

    plain = tmp_path / "plain"
    AutoModelForSeq2SeqLM.from_pretrained(tiny_mega2bart_dir).save_pretrained(plain)
    AutoTokenizer.from_pretrained(tiny_mega2bart_dir).save_pretrained(plain)
    records = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(records)
    # an earlier in-process command run with --quiet may have set transformers' verbosity to errors only
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()
    try:
        for folder in (tiny_mega2bart_dir, plain):
            AutoTokenizer.from_pretrained(folder)
            AutoConfig.from_pretrained(folder)
            MegaConfig.from_pretrained(folder)  # the encoder's part of the joined config
        AutoConfig.from_pretrained(tiny_mega2bart_dir, trust_remote_code=True)  # (the plain save has no code files)
        PretrainedConfig.from_pretrained(tiny_mega2bart_dir)  # the check sees warnings at all
    finally:
        logger.removeHandler(records)
        transformers_logging.set_verbosity(verbosity)
    assert sum(MISMATCH in message for message in records.messages) == 1, records.messages


def test_without_mega2bart_the_tokenizer_and_config_load_with_trust_remote_code_silently(
    tiny_mega2bart_dir, tmp_path
) -> None:
    """A process where `import mega2bart` fails: the built folder's tokenizer and config load with
    `trust_remote_code=True` and transformers logs no model-type warning (its stderr is empty of it)."""
    shadow = tmp_path / "shadow" / "mega2bart"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("mega2bart is hidden in this test")\n')
    script = tmp_path / "load.py"
    script.write_text(
        "import sys\n"
        "try:\n    import mega2bart\nexcept ImportError:\n    pass\nelse:\n    sys.exit('mega2bart is importable')\n"
        "from transformers import AutoConfig, AutoTokenizer\n"
        f"tokenizer = AutoTokenizer.from_pretrained({str(tiny_mega2bart_dir)!r}, trust_remote_code=True)\n"
        f"config = AutoConfig.from_pretrained({str(tiny_mega2bart_dir)!r}, trust_remote_code=True)\n"
        "print(type(tokenizer).__name__, config.encoder.model_type)\n"
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
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "mega" and MISMATCH not in result.stderr, result.stderr
