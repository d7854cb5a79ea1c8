"""benchmarks/_harness.py, the watched-worker harness every benchmark shares: results, failures and kills (fast)."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _harness():
    spec = importlib.util.spec_from_file_location("_harness", ROOT / "benchmarks" / "_harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_harness", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_result_line_is_read_and_the_record_has_its_keys() -> None:
    harness = _harness()
    code = "import sys; print('noise'); print('BENCH_RESULT ' + sys.argv[1])"
    run = harness.run_worker([*_python(code), json.dumps({"x": 1})], timeout=60)
    assert run.returncode == 0 and run.killed is None, run
    assert run.outcome() == {"result": {"x": 1}}
    assert run.wall_s > 0 and run.other_load >= 0


def test_a_failing_worker_gives_its_exit_code_and_last_stderr_lines() -> None:
    harness = _harness()
    code = "import sys; print('BENCH_RESULT {}'); [print(f'line {i}', file=sys.stderr) for i in range(9)]; sys.exit(3)"
    outcome = harness.run_worker(_python(code), timeout=60).outcome()
    assert set(outcome) == {"error", "max_rss_seen_gb"}, outcome
    assert outcome["error"] == "exit code 3: " + " | ".join(f"line {i}" for i in range(3, 9)), outcome
    outcome = harness.run_worker(_python("pass"), timeout=60).outcome()
    assert outcome["error"] == "exit code 0", outcome  # ended without a result line


def test_a_worker_is_killed_past_the_timeout_and_past_the_rss_limit() -> None:
    harness = _harness()
    run = harness.run_worker(_python("import time; time.sleep(60)"), timeout=1)
    assert run.killed == "killed: ran past --timeout 1 s" and run.wall_s < 30, run
    assert run.outcome()["error"] == run.killed
    hog = "import time; block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(60)"
    run = harness.run_worker(_python(hog), timeout=60, mem_limit_gb=0.2)
    assert run.killed is not None and run.killed.startswith("killed: RSS "), run
    assert run.killed.endswith("GB passed --mem-limit-gb 0.2") and run.max_rss_gb > 0.2, run


def test_worker_env_pins_threads_and_puts_the_repository_first(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = _harness()
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    env = harness.worker_env(3, repo_on_path=True, EXTRA="1")
    assert env["OMP_NUM_THREADS"] == "3" and env["EXTRA"] == "1"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "elsewhere"]
    assert harness.worker_env(1)["PYTHONPATH"] == "elsewhere"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_the_peak_rss_watermark_resets_to_the_current_rss() -> None:
    harness = _harness()
    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # resident
    del block
    assert harness.hwm_bytes() - harness.rss_bytes() > 100 * 2**20
    assert harness.reset_hwm()
    assert harness.hwm_bytes() - harness.rss_bytes() < 50 * 2**20
    assert harness.hwm_gb() == pytest.approx(harness.hwm_bytes() / 2**30, rel=0.05)
