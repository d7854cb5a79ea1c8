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
    report = json.loads(result.output)
    # the same tensors as the preset's plan; the process share is this (test) process's own RSS
    assert report["run_peak_bytes"] == plan_run(load_shape("tiny"), Workload(), RATE).run_peak_bytes
    assert report["process_source"].startswith("measured") and report["process_bytes"] > 100 * 1024**2
    assert report["peak_bytes"] == report["process_bytes"] + report["run_peak_bytes"]


# ----------------------------------------------------------------------------------------------
# the CUDA pre-flight, with a faked free-memory figure
# ----------------------------------------------------------------------------------------------


def test_preflight_refuses_with_the_fix(monkeypatch, tiny_mega2bart_dir):
    monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: 10 * 1024**3)
    shape = load_shape("large")
    workload = Workload(task="train", length=16384, device="cuda")
    assert plan_run(shape, workload).peak_bytes > 10 * 1024**3
    # available: the free memory + the CUDA context this process already holds (the plan's assumed 0.5 GiB)
    with pytest.raises(
        PlanError,
        match=r"needs [\d.]+ GiB, 10\.5 GiB available \(free \+ this process's context\): add --gradient-checkpointing",
    ):
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
        context = plan_run(shape, workload).process_bytes  # the pre-flight adds it to the free memory
        monkeypatch.setattr(planner, "_cuda_free_bytes", lambda: int(need * 0.95) - context)
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
    assert "blocks of 16 MiB or more" in planner.CPU_RSS_NOTE  # the threshold the commands set (allocator.py)
    assert planner.CPU_RSS_NOTE not in cuda.notes
    # on CUDA the plan names what it assumes for the context and the allocator, and how to measure them
    (cuda_note,) = [note for note in cuda.notes if note.startswith("CUDA")]
    assert "0.50 GiB" in cuda_note and "5% of the tensors + 0.25 GiB" in cuda_note
    assert "scripts/gpu_check.sh" in cuda_note


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


# ----------------------------------------------------------------------------------------------
# the whole process (issue 33): the process share, the load, the frozen encoder, glibc's thresholds
# ----------------------------------------------------------------------------------------------


def test_the_peak_is_the_whole_process_and_the_report_states_it_first():
    shape = load_shape("base")
    result = plan_run(shape, Workload(task="train", length=1024, label_tokens=64), RATE, process_bytes=400 * 10**6)
    assert result.breakdown["process"] == result.process_bytes == 400 * 10**6
    assert result.peak_bytes == result.process_bytes + result.run_peak_bytes == sum(result.breakdown.values())
    assert all(total >= result.process_bytes for total in result.phases.values())  # every phase holds the process
    default = plan_run(shape, Workload(task="train", length=1024, label_tokens=64), RATE)
    assert default.process_bytes == planner.CPU_OVERHEAD["process_bytes"]  # the measured constant
    report = planner.plan_report("base", Workload(task="train", length=1024, label_tokens=64), tflops=1.0)
    text = planner.format_report(report).splitlines()
    assert text[1].startswith("predicted peak of the whole process") and "RSS" in text[1]
    assert "process (interpreter, libraries)" in text[2]  # the breakdown below the total, the process first


def test_the_process_share_is_measured_in_the_process():
    measured = planner.measure_process_bytes()
    assert measured is not None and measured > 100 * 1024**2  # torch + transformers + mega2bart's command modules
    with open("/proc/self/status") as handle:
        rss = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))
    assert abs(measured - rss) < 0.2 * rss


def test_a_cast_at_load_holds_the_checkpoint_and_the_copy_and_unread_embedding_rows_are_not_counted():
    shape = load_shape("base")
    P, vocab, H = shape.parameters()["total"], shape.encoder.vocab, shape.encoder.hidden
    bf16 = planner.memory_phases(shape, Workload(length=1024, dtype="bf16"))["load"]
    assert bf16["load"] == 4 * P and bf16["weights"] == 2 * P  # fp32 file pages + the bf16 copy (run P4)
    fp32 = planner.memory_phases(shape, Workload(length=1024))
    assert fp32["load"]["load"] == 0  # memory-mapped in place
    unread = fp32["load"]["weights"] - fp32["decoding"]["weights"] + 4 * P - fp32["load"]["weights"]
    windows = vocab * H * 4 // planner.memory.FAULT_AROUND_BYTES  # 1,024 tokens read about 1,024 windows of them
    assert unread == pytest.approx(vocab * H * 4 * (1 - 1 / windows) ** 1024, rel=1e-6)
    assert 0.5 * vocab * H * 4 < unread < vocab * H * 4
    train = planner.memory_phases(shape, Workload(task="train", length=1024))
    assert train["forward"]["weights"] == 4 * P  # the optimiser writes every row
    cuda = planner.memory_phases(shape, Workload(length=1024, device="cuda"))
    assert cuda["decoding"]["weights"] == 4 * P


def test_a_frozen_encoder_keeps_no_encoder_activations_gradients_or_states():
    shape = load_shape("base")
    parameters = shape.parameters()
    trained = parameters["decoder"] + parameters["enc_to_dec_proj"]
    workload = Workload(task="train", length=2048, label_tokens=64)
    frozen = planner.memory_phases(shape, replace(workload, freeze="encoder"))
    full = planner.memory_phases(shape, workload)
    assert "encoder backward" in full and not any("encoder backward" in name for name in frozen)
    assert frozen["optimizer step"]["optimizer_states"] == 2 * 4 * trained  # AdamW: decoder + projection
    assert frozen["optimizer step"]["gradients"] == 4 * trained
    assert frozen["forward"]["encoder_activations"] == 0
    assert peak(shape, task="train", length=2048, freeze="encoder") < peak(shape, task="train", length=2048)
    with pytest.raises(PlanError, match="freeze 'decoder' is not one of none, encoder"):
        Workload(task="train", freeze="decoder")


def test_bf16_time_keeps_the_work_that_is_not_a_matmul_at_the_fp32_rate():
    shape = load_shape("base")
    workload = Workload(task="train", length=1024, label_tokens=64, dtype="bf16")
    fast_matmuls = plan_run(shape, workload, MatmulRate(4.0, 0.1, "test", fp32=1.0))
    fp32_only = plan_run(shape, replace(workload, dtype="fp32"), MatmulRate(1.0, 0.1, "test"))
    matmul_share = fast_matmuls.flops / 4e12
    rest = fast_matmuls.flops * (1 / planner.MODEL_EFFICIENCY - 1) / 1e12
    step = shape.parameters()["total"] * planner.OPTIMIZER_NS_PER_PARAMETER["adamw"] * 1e-9  # the assumed AdamW
    assert fast_matmuls.seconds == pytest.approx(matmul_share + rest + step)
    assert fp32_only.seconds == pytest.approx(fp32_only.flops / (1e12 * planner.MODEL_EFFICIENCY) + step)


def test_a_measured_efficiency_times_every_flop_at_that_share_of_the_dtypes_rate():
    shape = load_shape("base")
    workload = Workload(task="train", length=1024, label_tokens=64, dtype="bf16")
    measured = plan_run(shape, workload, MatmulRate(4.0, 0.1, "test", fp32=1.0, efficiency=0.6, optimizer_ns=2.0))
    assert measured.seconds == pytest.approx(measured.flops / (4e12 * 0.6) + shape.parameters()["total"] * 2e-9)
    # a frozen encoder: the optimiser steps over the decoder and the projection only
    frozen = plan_run(
        shape, replace(workload, freeze="encoder"), MatmulRate(4.0, 0.1, "t", efficiency=0.6, optimizer_ns=2.0)
    )
    trained = shape.parameters()["decoder"] + shape.parameters()["enc_to_dec_proj"]
    assert frozen.seconds == pytest.approx(frozen.flops / (4e12 * 0.6) + trained * 2e-9)
    generate = Workload(task="generate", length=1024, beams=2, new_tokens=8)
    assumed = plan_run(shape, generate, MatmulRate(1.0, 0.1, "test"))
    at_half = plan_run(shape, generate, MatmulRate(1.0, 0.1, "test", efficiency=0.5))
    # the decoding steps (few-row rate) and their fixed cost are the same; the encoder and projections change
    decoding = (
        2 * 8 * planner.decoder_token_flops(shape, 4.5, 1024) / 0.1e12 + 8 * planner.STEP_SECONDS["decoding_step"]
    )
    encoder = planner.encoder_forward_flops(shape.encoder, 1, 1024) + planner.source_projection_flops(shape, 1, 1024)
    assert at_half.seconds == pytest.approx(encoder / 0.5e12 + decoding)
    assert assumed.seconds == pytest.approx(encoder / (1e12 * planner.MODEL_EFFICIENCY) + decoding)


def test_the_efficiency_is_timed_on_a_layer_of_the_planned_shape():
    import torch

    for preset in ("tiny", "large"):
        encoder = load_shape(preset).encoder
        layer = planner.one_layer_encoder(encoder, 512)
        built = sorted(tuple(p.shape) for p in layer.parameters())
        counted = sorted(replace(encoder, layers=1, vocab=8, token_types=0).shapes())
        assert built == counted, preset
    tiny = load_shape("tiny").encoder
    torch.manual_seed(0)
    for train, what in ((False, "forward"), (True, "forward + backward")):
        rate = planner.measure_model_efficiency(tiny, RATE, "cpu", "fp32", length=100_000, train=train)
        assert (rate.large, rate.small, rate.source) == (RATE.large, RATE.small, RATE.source)
        assert 0 < rate.efficiency < 1  # the tiny layer at 1 TFLOP/s: far below it on any CPU
        assert rate.efficiency_source == f"measured: one encoder layer, {what}, 1 x 4096 tokens, fp32 (cpu)"
    short = planner.measure_model_efficiency(tiny, RATE, "cpu", "bf16", length=300, batch=32)
    assert short.efficiency_source == "measured: one encoder layer, forward, 13 x 300 tokens, bf16 (cpu)"


def test_plan_says_what_it_measured_and_assumes_nothing_with_tflops():
    measured = runner.invoke(app, ["plan", "tiny", "--length", "1024", "--new-tokens", "4", "--json"])
    assert measured.exit_code == 0, measured.output
    rate = json.loads(measured.output)["matmul_tflops"]
    assert rate["efficiency"] > 0
    assert rate["efficiency_source"] == "measured: one encoder layer, forward, 1 x 1024 tokens, fp32 (cpu)"
    text = runner.invoke(app, ["plan", "tiny", "--length", "1024", "--task", "train", "--label-tokens", "8"]).output
    assert "of that rate (measured: one encoder layer, forward + backward, 1 x 1024 tokens, fp32 (cpu))" in text
    assert "ns per trained parameter (measured)" in text
    args = ["plan", "tiny", "--task", "train", "--optimizer", "sgd", "--tflops", "1"]
    assert "the optimiser step at 0.30 ns per trained parameter (assumed)" in runner.invoke(app, args).output


def test_the_optimizer_cost_is_measured_per_parameter():
    costs = {name: planner.measure_optimizer_cost(name, parameters=2**20) for name in ("sgd", "adamw", "adafactor")}
    assert all(cost > 0 for cost in costs.values()), costs
    # AdamW reads and writes two more fp32 states per parameter than SGD; Adafactor's factored update does more
    assert costs["sgd"] < costs["adafactor"] and costs["adamw"] < costs["adafactor"], costs
    given = json.loads(runner.invoke(app, ["plan", "tiny", "--length", "1024", "--tflops", "1", "--json"]).output)
    assert given["matmul_tflops"]["efficiency"] is None


def test_the_commands_fix_glibcs_thresholds_unless_told_not_to(monkeypatch):
    import os
    import subprocess
    import sys

    from mega2bart.plan import allocator

    probe = "from mega2bart.plan.allocator import keep_rss_near_live; print(keep_rss_near_live())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", allocator.OPT_OUT_VARIABLE))}

    def fresh_process(**extra: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe], env={**clean, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert fresh_process() == "{'mmap_threshold': 16777216, 'trim_threshold': 33554432}"
    assert fresh_process(MEGA2BART_MALLOC_TRIM="0") == "{}"
    assert fresh_process(MALLOC_MMAP_THRESHOLD_="65536") == "{}"  # the user's own setting wins
    for name in [k for k in os.environ if k not in clean]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(allocator, "_applied", {})
    result = runner.invoke(app, ["plan", "tiny", "--length", "1024", "--tflops", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert allocator.applied() == {"mmap_threshold": 16777216, "trim_threshold": 33554432}  # set at the CLI's start


def test_plan_refuses_an_unknown_freeze_in_one_line():
    result = runner.invoke(app, ["plan", "tiny", "--task", "train", "--freeze", "decoder", "--tflops", "1"])
    assert result.exit_code == 2
    assert "freeze 'decoder' is not one of none, encoder" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bench_plan_checks_twenty_rows_eight_held_out_unlike_the_calibration():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_plan

    rows = bench_plan.specs(None, 1)
    assert len(rows) >= 20 and len({row["name"] for row in rows}) == len(rows)
    held_out = [row for row in rows if row["role"] == "held-out"]
    calibration = [row for row in rows if row["role"] == "calibrate"]
    assert len(held_out) >= 8 and all(row["load"] == "disk" for row in rows)

    def key(row: dict) -> tuple:
        return row["size"], row["task"], row["length"], row["batch"], row["beams"], row["dtype"]

    assert not {key(row) for row in held_out} & {key(row) for row in calibration}
    assert {row["freeze"] for row in held_out} == {"none", "encoder"}
    # the table compares the whole process's peak with the plan's total, and counts the held-out rows apart
    row = held_out[0]
    plan = bench_plan.predict(row, RATE, process_bytes=450 * 10**6)
    result = {"spec": row, "process_peak_bytes": int(plan["peak_bytes"] / 1.12), "seconds": 1.0}
    text = bench_plan.table([result], {row["name"]: RATE}, process=450 * 10**6)
    assert "+12.0%" in text and "held-out rows: 1; peak within +-15%: 1, within +-10%: 0" in text
    time_error = plan["seconds"] / 1.0 - 1
    assert f"time within +-30%: {int(abs(time_error) <= 0.3)}, largest time error {time_error:+.0%}." in text
