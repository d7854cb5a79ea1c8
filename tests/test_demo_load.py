"""`mega2bart demo` under load, bounded for CI: benchmarks/bench_demo_load.py's run, 8 clients x 5 requests through
gradio_client against the command in a subprocess on loopback (tiny model, short documents): every request
answered with the record of its own document, and the server's RSS flat after the first round."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmark imports its harness as `_harness`
    spec = importlib.util.spec_from_file_location("bench_demo_load", ROOT / "benchmarks" / "bench_demo_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eight_clients_five_requests_all_answered_none_mixed_up_memory_flat(tiny_mega2bart_dir, tmp_path):
    pytest.importorskip("gradio", reason='needs `pip install "mega2bart[demo]"`')
    bench = _bench()
    report = bench.run_load(
        tiny_mega2bart_dir, clients=8, requests=5, longest=8, timeout=240, log=tmp_path / "server.log"
    )
    summary = bench.summarize_run(report, rss_growth_mib=16)
    assert summary["answered"] == summary["calls"] == 40, summary["failures"]
    assert not summary["failures"] and not summary["mixed_up"], summary
    assert summary["windows_per_call"][1] > 1  # the longer documents went through windows
    assert summary["rss_growth_mib"] <= 16, bench.markdown(summary, report)
    assert summary["passed"]
