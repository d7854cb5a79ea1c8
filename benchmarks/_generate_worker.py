"""One generation or training measurement in a fresh process (driven by `bench_generate.py`; not run by hand).

    python benchmarks/_generate_worker.py '<json spec>'

The spec is a JSON object:
    {"case": "mega2bart" | "stock" | "led", "task": "generate" | "train", "size": "large" | "base" | "tiny",
     "length": int, "beams": int, "new_tokens": int, "label_tokens": int, "dtype": "fp32" | "bf16",
     "threads": int, "seed": int, "repeats": int, "warmup_tokens": int}
The result is printed as one line `BENCH_RESULT <json>` on stdout.

Models (random init from configs, nothing from the Hub):
- mega2bart / stock: `build_mega2bart(**preset_kwargs(size, random_init=True))` under `torch.manual_seed(seed)`,
  so both rows hold the same weights (`weights_fingerprint` in the result shows it). "mega2bart" generates
  with `model.generate`; "stock" calls the parent class's `transformers.EncoderDecoderModel.generate(model, ...)`,
  i.e. transformers' own generation whatever mega2bart overrides.
- led: `LEDForConditionalGeneration(LEDConfig(...))` shaped like allenai/led-large-16384 (or led-base-16384 for
  size "base", a toy for "tiny"), with global attention on the first token as LED summarisers use it.

Timing of one `generate` call (after a short warm-up call on `warmup_tokens` tokens, 2 new tokens):
- encoder_s: time inside the encoder module (forward pre-/post-hooks on `model.get_encoder()`);
- first_token_s: from the call to the first logits-processor call (encoder + first decoder step);
- per_token_s: the mean time between later logits-processor calls (one per decoding step, all beams);
- total_s: the whole call.
Memory: `peak_rss_gb` is the process's peak (model build included); `phase_peak_rss_gb` the peak of the measured
call(s) alone (VmHWM reset through /proc/self/clear_refs, see `_harness.py`).

Training ("train"): `model.train()`, gradient checkpointing on, forward with `label_tokens` labels and
`loss.backward()` (no optimiser step), after a warm-up step on `warmup_tokens` tokens.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # the repo root, in case mega2bart is not installed
from _harness import hwm_gb, maxrss_gb, pin_threads, print_result, reset_hwm, rss_gb, run_info  # noqa: E402
from _worker import DTYPES  # noqa: E402

# allenai/led-large-16384's configuration (config values as published).
LED_LARGE_CONFIG: dict[str, Any] = {
    "vocab_size": 50265,
    "d_model": 1024,
    "encoder_layers": 12,
    "decoder_layers": 12,
    "encoder_attention_heads": 16,
    "decoder_attention_heads": 16,
    "encoder_ffn_dim": 4096,
    "decoder_ffn_dim": 4096,
    "attention_window": [1024] * 12,
    "max_encoder_position_embeddings": 16384,
    "max_decoder_position_embeddings": 1024,
    "activation_function": "gelu",
    "dropout": 0.1,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "init_std": 0.02,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
}
# allenai/led-base-16384's configuration.
LED_BASE_FULL_CONFIG: dict[str, Any] = {
    **LED_LARGE_CONFIG,
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "attention_window": [1024] * 6,
}
# A toy LED for --quick (the width and depth of mega2bart's tiny preset decoder).
LED_TINY_CONFIG: dict[str, Any] = {
    **LED_LARGE_CONFIG,
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "attention_window": [64] * 2,
}
LED_CONFIGS = {"large": LED_LARGE_CONFIG, "base": LED_BASE_FULL_CONFIG, "tiny": LED_TINY_CONFIG}

# The same beam-search settings for every row: mega2bart's generation defaults (mega2bart.builder.DEFAULT_GENERATION)
# with min_new_tokens = max_new_tokens, so every row decodes exactly `new_tokens` steps.
GENERATION_SETTINGS: dict[str, Any] = {"no_repeat_ngram_size": 3, "length_penalty": 2.0, "early_stopping": True}


def build(case: str, size: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    if case in ("mega2bart", "stock"):
        from mega2bart.builder import build_mega2bart, preset_kwargs

        model, _ = build_mega2bart(**preset_kwargs(size, random_init=True))
        return model
    if case == "led":
        from transformers import LEDConfig, LEDForConditionalGeneration

        return LEDForConditionalGeneration(LEDConfig(**LED_CONFIGS[size]))
    raise ValueError(f"unknown case {case!r}: expected mega2bart, stock or led")


def fingerprint(model: torch.nn.Module) -> float:
    """A cheap weight checksum (the first 1,000 values of every tensor): equal for equal seeds and configs."""
    return float(sum(p.detach().reshape(-1)[:1000].double().sum() for p in model.parameters()))


def document(length: int, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """Batch 1: <s>, random ids from the ordinary vocabulary, </s>; everything attended."""
    generator = torch.Generator().manual_seed(seed)
    body = torch.randint(4, min(vocab, 50000), (length - 2,), generator=generator)
    ids = torch.cat([torch.tensor([0]), body, torch.tensor([2])]).unsqueeze(0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def led_extras(case: str, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    if case != "led":
        return {}
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1  # global attention on <s>, as LED summarisers use it
    return {"global_attention_mask": global_mask}


class EncoderTimer:
    """(start, end) of every call of the encoder module."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        self.calls: list[tuple[float, float]] = []
        self._start = 0.0
        encoder.register_forward_pre_hook(self._pre)
        encoder.register_forward_hook(self._post)

    def _pre(self, *_: Any) -> None:
        self._start = time.perf_counter()

    def _post(self, *_: Any) -> None:
        self.calls.append((self._start, time.perf_counter()))


def step_timer():
    from transformers import LogitsProcessor

    class StepTimer(LogitsProcessor):
        """Records when each decoding step's scores are ready (called once per step for all beams)."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            self.stamps.append(time.perf_counter())
            return scores

    return StepTimer()


def generate_fn(case: str, model: torch.nn.Module):
    if case == "stock":
        from transformers import EncoderDecoderModel

        return lambda **kwargs: EncoderDecoderModel.generate(model, **kwargs)
    return model.generate


def measure_generate(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import LogitsProcessorList

    case, length, beams, new_tokens = spec["case"], spec["length"], spec["beams"], spec["new_tokens"]
    rss_start = rss_gb()
    model = build(case, spec["size"], spec["seed"]).to(DTYPES[spec["dtype"]]).eval()
    rss_model = rss_gb()
    weights = fingerprint(model)
    vocab = model.config.decoder.vocab_size if case != "led" else model.config.vocab_size
    generate = generate_fn(case, model)
    encoder_timer = EncoderTimer(model.get_encoder())

    def run(batch: dict[str, torch.Tensor], tokens: int) -> tuple[dict[str, Any], torch.Tensor]:
        timer = step_timer()
        encoder_timer.calls.clear()
        torch.manual_seed(spec["seed"] + 1)
        start = time.perf_counter()
        out = generate(
            **batch,
            **led_extras(case, batch["input_ids"]),
            num_beams=beams,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            **GENERATION_SETTINGS,
            logits_processor=LogitsProcessorList([timer]),
        )
        end = time.perf_counter()
        stamps = timer.stamps
        timing = {
            "total_s": end - start,
            "encoder_s": sum(b - a for a, b in encoder_timer.calls),
            "encoder_calls": len(encoder_timer.calls),
            "first_token_s": stamps[0] - start if stamps else None,
            "per_token_s": (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else None,
            "steps": len(stamps),
            "step_gaps_s": [b - a for a, b in itertools.pairwise(stamps)],
        }
        return timing, out

    warm = document(min(spec["warmup_tokens"], length), vocab, spec["seed"])
    warmup, _ = run(warm, 2)
    batch = document(length, vocab, spec["seed"])
    hwm_ok = reset_hwm()
    timings = []
    for _ in range(max(1, spec.get("repeats", 1))):
        timing, out = run(batch, new_tokens)
        timings.append(timing)
    phase_peak = hwm_gb() if hwm_ok else None
    best = sorted(timings, key=lambda t: t["total_s"])[len(timings) // 2]  # the median call by total time
    sequences = out.sequences if hasattr(out, "sequences") else out
    return {
        **best,
        "all_total_s": [t["total_s"] for t in timings],
        "warmup_total_s": warmup["total_s"],
        "output_shape": list(sequences.shape),
        "output_sha": hashlib.sha256(sequences.cpu().numpy().tobytes()).hexdigest()[:16],
        "weights_fingerprint": weights,
        "rss_start_gb": rss_start,
        "rss_model_gb": rss_model,
        "phase_peak_rss_gb": phase_peak,
        "peak_rss_gb": max(value for value in (maxrss_gb(), phase_peak) if value is not None),
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def measure_train(spec: dict[str, Any]) -> dict[str, Any]:
    case, length, label_tokens = spec["case"], spec["length"], spec["label_tokens"]
    if case == "stock":
        raise ValueError("training has no stock/mega2bart distinction: use case 'mega2bart' or 'led'")
    rss_start = rss_gb()
    model = build(case, spec["size"], spec["seed"])
    rss_model = rss_gb()
    model.activation_checkpointing_enable()
    model.config.use_cache = False
    model.train()
    vocab = model.config.decoder.vocab_size if case != "led" else model.config.vocab_size
    params = [p for p in model.parameters() if p.requires_grad]

    def step(tokens: int, labels: int) -> float:
        batch = document(tokens, vocab, spec["seed"])
        batch["labels"] = document(labels, vocab, spec["seed"] + 2)["input_ids"]
        for p in params:
            p.grad = None
        torch.manual_seed(spec["seed"] + 1)  # dropout
        start = time.perf_counter()
        loss = model(**batch, **led_extras(case, batch["input_ids"])).loss
        loss.backward()
        return time.perf_counter() - start

    warmup = step(min(spec["warmup_tokens"], length), min(32, label_tokens))
    hwm_ok = reset_hwm()
    times = [step(length, label_tokens) for _ in range(max(1, spec.get("repeats", 1)))]
    phase_peak = hwm_gb() if hwm_ok else None
    return {
        "step_s": statistics.median(times),
        "all_step_s": times,
        "warmup_step_s": warmup,
        "params_with_grad": sum(p.grad is not None for p in params),
        "params_trainable": len(params),
        "rss_start_gb": rss_start,
        "rss_model_gb": rss_model,
        "phase_peak_rss_gb": phase_peak,
        "peak_rss_gb": max(value for value in (maxrss_gb(), phase_peak) if value is not None),
        "n_params": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: _generate_worker.py '<json spec>' (run by benchmarks/bench_generate.py)")
    spec = json.loads(sys.argv[1])
    pin_threads(spec.get("threads"))
    if spec["task"] == "generate":
        result = measure_generate(spec)
    elif spec["task"] == "train":
        result = measure_train(spec)
    else:
        raise ValueError(f"unknown task {spec['task']!r}: expected generate or train")
    result.update(run_info(spec))
    print_result(result)


if __name__ == "__main__":
    main()
