"""Generation settings that make no sense are refused the same way wherever they are given: build's settings,
eval/summarize flags, and a saved generation_config.json read by eval, summarize and train."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from mega2bart.builder.generation import check_generation_settings, generation_problems
from mega2bart.cli import ERROR_EXIT_CODE, app

BAD = [
    ({"num_beams": 0}, "num_beams (0) must be an integer >= 1"),
    ({"max_new_tokens": -2}, "max_new_tokens (-2) must be an integer >= 1"),
    ({"num_beams": 2.5}, "num_beams (2.5) must be an integer >= 1"),
    ({"max_length": 0}, "max_length (0) must be an integer >= 1"),
    ({"length_penalty": float("nan")}, "length_penalty (nan) must be a finite number"),
    ({"length_penalty": float("inf")}, "length_penalty (inf) must be a finite number"),
    ({"repetition_penalty": 0.0}, "repetition_penalty (0.0) must be > 0"),
    ({"top_p": 0.0}, "top_p (0.0) must be in (0, 1]"),
    ({"top_p": 1.5}, "top_p (1.5) must be in (0, 1]"),
    ({"temperature": 0.0, "do_sample": True}, "temperature (0.0) must be > 0 with do_sample"),
    ({"min_length": 50, "max_length": 20}, "min_length (50) exceeds max_length (20)"),
]


@pytest.mark.parametrize(("settings", "message"), BAD)
def test_each_senseless_setting_is_named(settings, message) -> None:
    assert message in generation_problems(settings)


def test_sensible_settings_pass() -> None:
    good = {"num_beams": 4, "max_length": 513, "min_length": 33, "length_penalty": 2.0, "top_p": 1.0}
    assert generation_problems({**good, "temperature": 0.0}) == []  # greedy: temperature unused
    assert generation_problems({**good, "temperature": 0.7, "do_sample": True, "top_k": 0}) == []


@pytest.mark.parametrize(("settings", "message"), BAD[:6])
def test_build_refuses_them(settings, message) -> None:
    with pytest.raises(ValueError, match="generation setting " + message.split(" (")[0]):
        check_generation_settings(settings)


def test_flags_and_saved_configs_are_refused_in_one_line(tiny_mega2bart_dir, tmp_path) -> None:
    runner = CliRunner()
    document = tmp_path / "doc.txt"
    document.write_text("A short document. It has two sentences.", encoding="utf-8")
    result = runner.invoke(app, ["summarize", str(tiny_mega2bart_dir), str(document), "--output",
                                 str(tmp_path / "s.txt"), "--length-penalty", "nan"])  # fmt: skip
    assert result.exit_code == ERROR_EXIT_CODE and "length_penalty (nan) must be a finite number" in result.output
    bad = tmp_path / "bad"
    shutil.copytree(tiny_mega2bart_dir, bad)
    path = bad / "generation_config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**saved, "do_sample": True, "top_p": 1.5}), encoding="utf-8")
    for command in (
        ["summarize", bad, document, "--output", tmp_path / "s2.txt"],
        ["eval", bad, "--dataset", "aclsum", "--limit", "1", "--output-dir", tmp_path / "e"],
        ["train", "--model", bad, "--dataset", "aclsum", "--output-dir", tmp_path / "t", "--max-steps", "1"],
    ):
        result = runner.invoke(app, [str(a) for a in command])
        assert result.exit_code == ERROR_EXIT_CODE, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "generation_config.json: top_p (1.5) must be in (0, 1]" in errors[0], errors
