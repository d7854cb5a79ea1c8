"""--quiet leaves only errors and the result lines; mega2bart's log handler follows stderr (no "Logging error"
after an in-process command closed the stream it started with)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mega2bart(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "mega2bart.cli", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.e2e
def test_quiet_commands_print_only_their_results(tmp_path: Path) -> None:
    built = _mega2bart("build", "model", "--preset", "tiny", "--quiet", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert built.stdout.startswith("saved model (") and len(built.stdout.splitlines()) == 1, built.stdout
    (tmp_path / "doc.txt").write_text("A short document. It has two sentences.", encoding="utf-8")
    runs = {
        "train": ("train", "--model", "model", "--dataset", "aclsum", "--output-dir", "run", "--max-steps", "2",
                  "--eval-split", "none", "--max-source-length", "128", "--set", "max_train_samples=8"),
        "eval": ("eval", "model", "--dataset", "aclsum", "--limit", "1", "--output-dir", "ev", "--max-new-tokens", "4",
                 "--max-input-tokens", "256"),
        "summarize": ("summarize", "model", "doc.txt", "--output", "sum.txt", "--max-new-tokens", "4"),
        "export": ("export", "model", "encoder"),
    }  # fmt: skip
    expected_last = {
        "train": "model, checkpoints and metrics.json in run",
        "eval": "wrote ev/",
        "summarize": "wrote sum",
        "export": "saved encoder",
    }
    for name, args in runs.items():
        done = _mega2bart(*args, "--quiet", cwd=tmp_path)
        assert done.returncode == 0, (name, done.stderr)
        assert done.stderr == "", (name, done.stderr)  # no bars, no log lines, no warnings
        assert "{'train_runtime'" not in done.stdout and "it/s" not in done.stdout, (name, done.stdout)
        assert expected_last[name] in done.stdout.splitlines()[-1], (name, done.stdout)


def test_log_handler_writes_to_the_current_stderr(monkeypatch) -> None:
    from mega2bart import cli

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    cli._setup_logging(True)
    logger = logging.getLogger("mega2bart.test")
    logger.info("one")
    first.close()  # what CliRunner does to its captured stream after a command
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logger.info("two")
    assert "two" in second.getvalue() and "Logging error" not in second.getvalue()
