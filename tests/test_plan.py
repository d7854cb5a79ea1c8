"""`mega2bart plan`: the analytic peak-memory and time predictor, its fit search, the CLI and the CUDA pre-flight.

No measurement here: predicted against measured peaks is benchmarks/bench_plan.py's job (RSS depends on the
allocator and the machine); these tests check the arithmetic and the behaviour.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from mega2bart import plan as planner
from mega2bart.cli import app
from mega2bart.plan import (
    BREAKDOWN_KEYS,
    MatmulRate,
    PlanError,
    Workload,
    fit_report,
    load_shape,
    parse_bytes,
    plan_run,
)

RATE = MatmulRate(1.0, 0.1, "test")
runner = CliRunner()


def peak(shape, **changes) -> int:
    return plan_run(shape, Workload(**changes), RATE).peak_bytes


def test_parameter_counts_match_the_documented_architectures():
    large = load_shape("large").parameters()
    assert large["encoder"] == 121_959_432  # the seed MEGA encoder without pooler (presets.py)
    assert large["decoder"] == 254_084_096  # BartForCausalLM, bart-large shapes (presets.py)
    assert large["total"] == 376_830_984  # `mega2bart build --preset large --random-init` (benchmarks/README.md)
    assert load_shape("base").parameters()["enc_to_dec_proj"] == 0  # both 768 wide


def test_parameter_count_of_a_saved_tiny_model(tiny_mega2bart_dir):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mega2bart_dir)
    unique = {id(p): p for p in model.parameters()}.values()
    total = sum(p.numel() for p in unique)
    if getattr(model.encoder, "pooler", None) is not None:  # the planner follows the builder: no pooler
        total -= sum(p.numel() for p in model.encoder.pooler.parameters())
    assert load_shape(tiny_mega2bart_dir).parameters()["total"] == total
    assert isinstance(total, int) and torch.is_tensor(next(iter(unique)))


def test_seed_layer_keeps_118_mb_per_1024_tokens_in_training():
    # benchmarks/README.md: saved-tensor hooks counted 118 MB per layer per 1,024 tokens (fp32, no padding)
    encoder = load_shape("large").encoder
    saved = planner._encoder_layer_saved(encoder, 1024, 1024, 4, fp32_signal=False)
    assert saved == pytest.approx(118e6, rel=0.02)


@pytest.mark.parametrize("task", ["train", "generate"])
@pytest.mark.parametrize("size", ["tiny", "large"])
def test_breakdown_sums_to_the_peak_and_the_peak_is_the_largest_phase(task, size):
    result = plan_run(load_shape(size), Workload(task=task, length=4096, gradient_checkpointing=True), RATE)
    assert set(result.breakdown) == set(BREAKDOWN_KEYS)
    assert sum(result.breakdown.values()) == result.peak_bytes
    assert result.phases[result.peak_phase] == result.peak_bytes == max(result.phases.values())
    assert all(value >= 0 for value in result.breakdown.values())
    assert result.flops > 0 and result.seconds > 0


@pytest.mark.parametrize("task", ["train", "generate"])
def test_peak_grows_with_length_batch_and_beams(task):
    shape = load_shape("large")
    for name, values in {"length": [1024, 2048, 4096, 16384, 32768], "batch": [1, 2, 4, 8]}.items():
        peaks = [peak(shape, task=task, **{name: v}) for v in values]
        assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks), name
    if task == "generate":
        peaks = [peak(shape, task=task, beams=k, new_tokens=512) for k in (1, 2, 4, 8)]
        assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks)
    else:
        peaks = [peak(shape, task=task, label_tokens=t) for t in (64, 256, 1024)]
        assert peaks == sorted(peaks)


def test_what_mega2bart_changed_shows_in_the_plan():
    shape = load_shape("large")
    train = dict(task="train", length=16384)
    assert peak(shape, **train, gradient_checkpointing=True) < 0.6 * peak(shape, **train)
    assert peak(shape, **train, dtype="bf16") < peak(shape, **train)
    assert peak(shape, **train, optimizer="sgd") < peak(shape, **train, optimizer="adafactor") < peak(shape, **train)
    # shared cross-attention: 4 beams cost only their self-attention cache and score tables over 1 beam
    one, four = (plan_run(shape, Workload(length=16384, beams=k), RATE) for k in (1, 4))
    assert four.breakdown["cross_attention_cache"] == one.breakdown["cross_attention_cache"]
    assert four.peak_bytes - one.peak_bytes < 0.05 * one.peak_bytes
    assert four.seconds > one.seconds


def test_fit_search_finds_the_boundary():
    shape = load_shape("large")
    workload = Workload(task="generate", length=16384, beams=4, new_tokens=256)
    need = plan_run(shape, workload).peak_bytes
    assert fit_report(shape, workload, need)["fits"]
    report = fit_report(shape, workload, need - 1)
    assert not report["fits"]
    length = report["largest"]["length"]
    assert length is not None and length % shape.encoder.chunk == 0 and length < 16384
    assert plan_run(shape, replace(workload, length=length)).peak_bytes <= need - 1
    assert plan_run(shape, replace(workload, length=length + shape.encoder.chunk)).peak_bytes > need - 1
    assert any(change["fits"] for change in report["changes"])
    roomy = fit_report(shape, workload, 8 * need)
    assert roomy["fits"] and roomy["largest"]["batch"] > 1 and roomy["largest"]["beams"] > 4


def test_nothing_fits_in_a_tiny_budget():
    shape = load_shape("large")
    report = fit_report(shape, Workload(task="train", length=1024), 1024**2)
    assert not report["fits"] and report["largest"]["length"] is None and report["largest"]["batch"] is None
    assert "no single change fits" in planner.fix_message(report["peak_bytes"], 1024**2, report["changes"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("24GiB", 24 * 1024**3), ("80GB", 80 * 10**9), ("512 MiB", 512 * 1024**2), ("1.5G", int(1.5 * 1024**3))],
)
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


def test_plan_json_has_the_documented_keys():
    result = runner.invoke(app, ["plan", "tiny", "--length", "2048", "--tflops", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"peak_bytes", "seconds", "breakdown", "phases", "flops", "parameters", "workload"} <= set(report)
    assert set(report["breakdown"]) == set(BREAKDOWN_KEYS)
    assert report["peak_bytes"] == sum(report["breakdown"].values())


def test_plan_text_with_device_memory_says_what_to_change():
    args = ["plan", "large", "--task", "train", "--length", "16384", "--tflops", "10", "--device", "cuda"]
    result = runner.invoke(app, [*args, "--device-memory", "12GiB"])
    assert result.exit_code == 0, result.output
    assert "does NOT fit in 12.0 GiB" in result.output and "--gradient-checkpointing" in result.output
    assert "largest that fit" in result.output
    fits = runner.invoke(app, [*args, "--gradient-checkpointing", "--device-memory", "80GB", "--json"])
    assert json.loads(fits.output)["fit"]["fits"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plan", "huge"], "neither a preset"),
        (["plan", "tiny", "--task", "finetune"], "task 'finetune'"),
        (["plan", "tiny", "--dtype", "int8"], "dtype 'int8'"),
        (["plan", "tiny", "--optimizer", "lion"], "optimizer 'lion'"),
        (["plan", "tiny", "--device-memory", "lots"], "cannot read 'lots'"),
        (["plan", "tiny", "--tflops", "0"], "--tflops"),
    ],
)
def test_plan_bad_input_is_one_line(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_plan_bad_model_directories(tmp_path):
    assert "no config.json" in runner.invoke(app, ["plan", str(tmp_path)]).output
    (tmp_path / "config.json").write_text("{not json")
    assert "not readable JSON" in runner.invoke(app, ["plan", str(tmp_path)]).output
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart"}))
    assert "not an encoder-decoder config" in runner.invoke(app, ["plan", str(tmp_path)]).output
    config = {"encoder": {"model_type": "mega"}, "decoder": {"model_type": "bart"}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert "has no 'vocab_size'" in runner.invoke(app, ["plan", str(tmp_path)]).output


def test_plan_of_a_saved_model_directory(tiny_mega2bart_dir):
    result = runner.invoke(app, ["plan", str(tiny_mega2bart_dir), "--tflops", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["peak_bytes"] == plan_run(load_shape("tiny"), Workload(), RATE).peak_bytes


# ----------------------------------------------------------------------------------------------
# the CUDA pre-flight, with a faked free-memory figure
# ----------------------------------------------------------------------------------------------


def test_preflight_refuses_with_the_fix(monkeypatch, tiny_mega2bart_dir):
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: 10 * 1024**3)
    shape = load_shape("large")
    workload = Workload(task="train", length=16384, device="cuda")
    assert plan_run(shape, workload).peak_bytes > 10 * 1024**3
    with pytest.raises(PlanError, match=r"needs [\d.]+ GiB, 10\.0 GiB free: add --gradient-checkpointing"):
        planner.preflight_check("large", workload)
    assert planner.preflight_check("large", replace(workload, gradient_checkpointing=True)) is not None
    assert planner.preflight_check("large", replace(workload, device="cpu")) is None
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: None)  # no CUDA: no check
    assert planner.preflight_generate(tiny_mega2bart_dir, None, 4, None, None, "fp32") is None


@pytest.mark.parametrize("encoder", ["mega", {"max_positions": "abc"}, [1, 2]])
def test_preflight_leaves_a_damaged_config_to_the_loader(monkeypatch, tmp_path, encoder):
    """On CUDA, a config.json the loader refuses in one line (`encoder` a string, a size that is text) makes the
    pre-flight step aside instead of raising its own traceback."""
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: 10 * 1024**3)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "encoder-decoder", "encoder": encoder}))
    assert planner.preflight_generate(tmp_path, None, 1, None, None, "fp32") is None


@pytest.mark.parametrize(
    ("command", "task", "wanted", "unwanted"),
    [
        ("plan", "train", ["add --gradient-checkpointing", "use --dtype bf16", "use --batch 1"], ["--bf16 true"]),
        ("train", "train", ["add --gradient-checkpointing", "add --bf16 true", "use --batch-size 1"], ["--dtype"]),
        (
            "generate",
            "generate",
            ["use --dtype bf16", "use --num-beams 2", "use --batch-size 1"],
            ["--beams ", "--batch "],
        ),
    ],
)
def test_the_fix_names_the_flags_of_the_refused_command(monkeypatch, command, task, wanted, unwanted):
    shape = load_shape("large")
    workload = Workload(task=task, length=16384, batch=2, beams=4, device="cuda")
    need = plan_run(shape, workload).peak_bytes
    changes = " | ".join(change["change"] for change in fit_report(shape, workload, need // 2, command)["changes"])
    assert all(text in changes for text in wanted), changes
    assert not any(text in changes for text in unwanted), changes
    if command != "plan":  # the pre-flight of train / eval / summarize writes its own command's flags
        monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: int(need * 0.95))
        with pytest.raises(PlanError) as refused:
            planner.preflight_check("large", workload, command)
        message = str(refused.value)
        assert any(text in message for text in wanted[1:]) and not any(text in message for text in unwanted)


def test_summarize_stops_before_loading_when_the_plan_does_not_fit(monkeypatch, tmp_path, tiny_mega2bart_dir):
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: 1024**2)  # 1 MiB "free on the GPU"
    document = tmp_path / "doc.txt"
    document.write_text("A short document about memory planning. " * 20)
    output = tmp_path / "out.jsonl"
    args = ["summarize", str(tiny_mega2bart_dir), str(document), "--output", str(output), "--quiet"]
    refused = runner.invoke(app, [*args, "--max-new-tokens", "4"])
    assert refused.exit_code == 2
    assert "does not fit the GPU: needs" in refused.output and "--no-plan-check" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not output.exists()
    passed = runner.invoke(app, [*args, "--max-new-tokens", "4", "--no-plan-check"])
    assert passed.exit_code == 0, passed.output
    assert output.exists()


def test_eval_and_train_run_the_preflight(monkeypatch, tmp_path, tiny_mega2bart_dir):
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: 1024**2)
    refused = runner.invoke(app, ["eval", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "eval")])
    assert refused.exit_code == 2 and "does not fit the GPU" in refused.output
    train_args = ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "run")]
    refused = runner.invoke(app, train_args)
    assert refused.exit_code == 2 and "does not fit the GPU" in refused.output
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_cpu_plan_says_that_glibc_can_keep_freed_memory():
    shape = load_shape("tiny")
    cpu = plan_run(shape, Workload(task="train", length=4096), RATE)
    cuda = plan_run(shape, Workload(task="train", length=4096, device="cuda"), RATE)
    assert planner.CPU_RSS_NOTE in cpu.notes and "MALLOC_MMAP_THRESHOLD_" in planner.CPU_RSS_NOTE
    assert planner.CPU_RSS_NOTE not in cuda.notes


def test_training_counts_the_tied_embedding_gradients_and_the_first_blocks_backward():
    # run P2 (benchmarks/README.md): at the end of the decoder's backward three (V, d) fp32 buffers of the tied
    # embedding / lm_head are alive at once; in the first block's backward the other blocks' gradients exist
    shape = load_shape("base")
    parameters = shape.parameters()
    decoder_grads = 4 * (parameters["decoder"] + parameters["enc_to_dec_proj"])
    phases = planner.memory_phases(shape, Workload(task="train", length=4096, gradient_checkpointing=True))
    tied = 4 * shape.decoder.vocab * shape.decoder.width
    assert phases["decoder embedding backward"]["gradients"] == decoder_grads + 2 * tied
    layers = shape.encoder.layers
    encoder = shape.encoder
    encoder_layer_grads = 4 * (parameters["encoder"] - (encoder.vocab + encoder.token_types) * encoder.hidden)
    first = phases["encoder backward, first block"]
    assert first["gradients"] == decoder_grads + encoder_layer_grads * (layers - 1) // layers
    assert first["encoder_activations"] < phases["encoder backward"]["encoder_activations"]


def test_the_loss_backward_and_the_optimizer_step_count_what_is_left_of_the_forward():
    # run P2: three (B T, V) fp32 buffers in the loss's backward; autocast's bf16 weight copies gone by the step
    shape = load_shape("tiny")
    phases = planner.memory_phases(shape, Workload(task="train", length=4096, batch=2, label_tokens=64, dtype="bf16"))
    assert phases["loss backward"]["logits"] == 2 * 64 * shape.decoder.vocab * 3 * 4
    assert phases["loss backward"]["gradients"] == 0
    assert phases["optimizer step"]["weights"] == 4 * shape.parameters()["total"] < phases["forward"]["weights"]
