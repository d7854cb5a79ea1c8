"""scripts/gpu_check.sh: the prepared GPU check cannot run here (no GPU), so its CPU parts are checked: the shell
wrapper's argument passing, the row list, the planner's predictions (--dry-run) and the results table."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_lists_every_row_with_its_prediction(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    out = tmp_path / "results"
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), str(out), "--dry-run", "--tflops", "400"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("would run 10 row(s)") and str(out) in lines[0]
    assert any(line.startswith("  g2:") and '"length": 16384' in line and "GiB" in line for line in lines)
    assert any(line.startswith("  g5:") and '"led"' in line and "measured only" in line for line in lines)
    assert any(line.startswith("  r4:") and '"bf16"' in line and "GiB" in line for line in lines)
    assert not out.exists()  # a dry run writes nothing


def test_rows_refuse_unknown_names_and_the_table_reads_results():
    gpu_check = _module()
    rows = gpu_check.rows({"g2", "r4"})
    assert [row["name"] for row in rows] == ["g2", "r4"]
    try:
        gpu_check.rows({"g9"})
    except SystemExit as exc:
        assert "unknown row(s) g9" in str(exc)
    else:
        raise AssertionError("an unknown row was accepted")
    plan = gpu_check.predict(rows[0], tflops=400.0)
    assert plan["workload"]["device"] == "cuda" and plan["peak_bytes"] > 0
    assert plan["peak_bytes"] == plan["run_peak_bytes"] + plan["process_bytes"]  # the CUDA context is assumed
    measured = {
        "measured_peak_bytes": plan["run_peak_bytes"] // 2,
        "max_reserved_bytes": plan["run_peak_bytes"],
        "context_bytes": 2**29,
        "seconds": 1,
    }
    text = gpu_check.table(
        [
            {"row": rows[0], "plan": plan, "measured": measured},
            {"row": rows[1], "plan": None, "measured": {"error": "CUDA out of memory"}},
        ]
    )
    assert "| g2 | mega2bart | generate | large | 16,384 |" in text and "+100.0%" in text
    assert "| 0.50 (0.50) |" in text  # the measured context beside the plan's assumption
    assert "CUDA out of memory" in text
