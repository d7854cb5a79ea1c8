"""A damaged model directory (malformed or non-object JSON, a truncated or foreign .safetensors file) given to any
command that reads one ends in a one-line error naming the file, with the CLI's error exit code and no traceback; the damaged
files are left as they were."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from faults.damage import KINDS, NAMED_FILE
from faults.damage import damage as _damage
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

runner = CliRunner()


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def _assert_one_line_error(result, name: str) -> None:
    assert result.exit_code == ERROR_EXIT_CODE, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and name in errors[0], result.output
    assert "damaged" in errors[0] or "truncated" in errors[0], result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("kind", KINDS)
def test_built_model_commands_refuse_a_damaged_folder_in_one_line(kind, tiny_mega2bart_dir, tmp_path) -> None:
    model = _damage(tiny_mega2bart_dir, tmp_path / "damaged", kind)
    before = _digests(model)
    document = tmp_path / "doc.txt"
    document.write_text("A short document. It has two sentences.", encoding="utf-8")
    commands = [
        ["info", model],
        ["eval", model, "--dataset", "aclsum", "--output-dir", tmp_path / "eval", "--limit", "1"],
        ["summarize", model, document, "--output", tmp_path / "summary.txt"],
        ["train", "--model", model, "--dataset", "aclsum", "--output-dir", tmp_path / "train", "--max-steps", "1"],
    ]
    for command in commands:
        result = runner.invoke(app, [str(a) for a in command])
        _assert_one_line_error(result, NAMED_FILE[kind])
    assert _digests(model) == before


@pytest.mark.parametrize("kind", ["config-malformed", "weights-header", "weights-cut"])
def test_build_and_pretrain_inputs_refuse_a_damaged_folder(
    kind, tiny_mega_encoder_dir, tiny_bart_decoder_dir, tmp_path
) -> None:
    encoder = _damage(tiny_mega_encoder_dir, tmp_path / "encoder", kind)
    decoder = _damage(tiny_bart_decoder_dir, tmp_path / "decoder", kind)
    before = {**_digests(encoder), **{f"decoder/{k}": v for k, v in _digests(decoder).items()}}
    text = tmp_path / "text.txt"
    text.write_text("Some raw text to pretrain on. " * 20, encoding="utf-8")
    for command in (
        ["build", tmp_path / "b1", "--encoder", encoder, "--decoder", tiny_bart_decoder_dir, "--tokenizer", "offline"],
        ["build", tmp_path / "b2", "--encoder", tiny_mega_encoder_dir, "--decoder", decoder, "--tokenizer", "offline"],
        ["pretrain", "--encoder", encoder, "--dataset", text, "--output-dir", tmp_path / "mlm", "--max-steps", "1"],
    ):
        result = runner.invoke(app, [str(a) for a in command])
        _assert_one_line_error(result, NAMED_FILE[kind])
        assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()
    assert {**_digests(encoder), **{f"decoder/{k}": v for k, v in _digests(decoder).items()}} == before
