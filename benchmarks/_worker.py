"""One benchmark measurement in a fresh process (driven by `bench_encoder.py`; not meant to be run by hand).

    python benchmarks/_worker.py '<json spec>'

Runs under either virtual environment: the main one (impl "native" = mega2bart's MEGA, "led" = LED-base's
encoder from transformers 5, and the matmul-peak / FLOP-count probes) or the reference one (impl "port" = the
transformers 4.57.1 MEGA port). It therefore imports only the standard library, torch and `_harness` (the
benchmarks' shared memory probes and result line, standard library only) at module level; each
implementation's imports happen inside its builder.

The spec is a JSON object:
    {"impl": "native" | "port" | "led" | "matmul" | "flops",
     "length": int, "mode": "infer" | "train" | "train-ckpt", "dtype": "fp32" | "bf16",
     "threads": int, "repeats": int, "seed": int}
The result is printed as one line `BENCH_RESULT <json>` on stdout.

Memory: `peak_rss_gb` is the whole process's peak (imports, model, every call): the largest of `ru_maxrss`
at the end and the two phase peaks below (the VmHWM reset also resets what `ru_maxrss` reports).
`VmHWM` in /proc/self/status is reset (`echo 5 > /proc/self/clear_refs`) before the first call and again before
the steady calls, so `first_peak_rss_gb` and `steady_peak_rss_gb` are the peaks of those phases alone.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _harness import hwm_gb, maxrss_gb, pin_threads, print_result, reset_hwm, rss_gb, run_info

# docs/mega.md#seed-configuration (the seed checkpoint BEE-spoke-data/mega-encoder-small-16k-v1), dropouts 0.
# The field names are the 4.x ones, so the same dict configures the native model and the 4.57.1 port.
SEED_MEGA_CONFIG: dict[str, Any] = {
    "vocab_size": 50304,
    "hidden_size": 768,
    "num_hidden_layers": 8,
    "intermediate_size": 2304,
    "nffn_hidden_size": 2304,
    "shared_representation_size": 192,
    "ema_projection_size": 32,
    "bidirectional": True,
    "use_chunking": True,
    "chunk_size": 1024,
    "truncation": None,
    "max_positions": 16384,
    "relative_positional_bias": "simple",
    "normalization_type": "scalenorm",
    "norm_affine": True,
    "normalize_before_mega": False,
    "normalize_before_ffn": False,
    "activation": "silu",
    "attention_activation": "softmax",
    "add_token_type_embeddings": True,
    "type_vocab_size": 2,
    "use_normalized_ffn": True,
    "use_feature_dropout": False,
    "add_lm_hidden_dense_layer": False,
    "dropout_prob": 0.0,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "nffn_activation_dropout_prob": 0.0,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}

# allenai/led-base-16384's encoder (config values as published; random init, built from the config).
LED_BASE_CONFIG: dict[str, Any] = {
    "vocab_size": 50265,
    "d_model": 768,
    "encoder_layers": 6,
    "decoder_layers": 6,
    "encoder_attention_heads": 12,
    "decoder_attention_heads": 12,
    "encoder_ffn_dim": 3072,
    "decoder_ffn_dim": 3072,
    "attention_window": [1024] * 6,
    "max_encoder_position_embeddings": 16384,
    "max_decoder_position_embeddings": 1024,
    "activation_function": "gelu",
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------
# model builders: each returns (model, call) where call(input_ids) -> last hidden state
# ------------------------------------------------------------------------------------------------


def build_native() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, in case mega2bart is not installed
    from mega2bart.models.mega.configuration_mega import MegaConfig
    from mega2bart.models.mega.modeling_mega import MegaModel

    model = MegaModel(MegaConfig(**SEED_MEGA_CONFIG), add_pooling_layer=False)
    return model, lambda ids: model(input_ids=ids).last_hidden_state


def build_port() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    import transformers
    from transformers.models.deprecated.mega import MegaConfig, MegaModel

    if not transformers.__version__.startswith("4."):
        raise RuntimeError(
            f"impl 'port' needs transformers 4.x (found {transformers.__version__}): run this worker with "
            "the reference environment's python (`bash scripts/reference_env.sh` prints it; bench_encoder.py --port-python)"
        )
    model = MegaModel(MegaConfig(**SEED_MEGA_CONFIG), add_pooling_layer=False)
    return model, lambda ids: model(input_ids=ids).last_hidden_state


def build_led() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    from transformers import LEDConfig
    from transformers.models.led.modeling_led import LEDEncoder

    model = LEDEncoder(LEDConfig(**LED_BASE_CONFIG))

    def call(ids: torch.Tensor) -> torch.Tensor:
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state

    return model, call


def build_compiled() -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The native MEGA under torch.compile (inductor, one fixed length per worker, no graph breaks)."""
    model, _ = build_native()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    return model, lambda ids: compiled(input_ids=ids).last_hidden_state


BUILDERS = {"native": build_native, "port": build_port, "led": build_led, "compiled": build_compiled}


# ------------------------------------------------------------------------------------------------
# measurements
# ------------------------------------------------------------------------------------------------


def measure_model(spec: dict[str, Any]) -> dict[str, Any]:
    impl, length, mode, dtype = spec["impl"], spec["length"], spec["mode"], DTYPES[spec["dtype"]]
    torch.manual_seed(spec.get("seed", 0))
    rss_start = rss_gb()
    model, call = BUILDERS[impl]()
    model.to(dtype)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab - 64, (1, length))  # batch 1; avoids the special ids 0..2
    training = mode.startswith("train")
    if mode == "train-ckpt":
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise ValueError(f"impl {impl!r} has no gradient checkpointing: use mode 'train'")
        model.activation_checkpointing_enable()
    model.train(training)
    params = [p for p in model.parameters() if p.requires_grad]
    rss_model = rss_gb()

    def run_once() -> float:
        if training:
            for p in params:
                p.grad = None
            start = time.perf_counter()
            hidden = call(ids)
            hidden.float().sum().backward()
            return time.perf_counter() - start
        with torch.inference_mode():
            start = time.perf_counter()
            hidden = call(ids)
            return time.perf_counter() - start

    hwm_ok = reset_hwm()
    first = run_once()  # for "compiled" this call also compiles
    first_peak = hwm_gb() if hwm_ok else None
    steady: list[float] = []
    reset_hwm()
    for _ in range(spec["repeats"]):
        steady.append(run_once())
    steady_peak = hwm_gb() if (hwm_ok and steady) else None

    result: dict[str, Any] = {
        "first_s": first,
        "steady_s": statistics.median(steady) if steady else None,
        "steady_all_s": steady,
        "rss_start_gb": rss_start,
        "rss_model_gb": rss_model,
        "first_peak_rss_gb": first_peak,
        "steady_peak_rss_gb": steady_peak,
        # resetting VmHWM through clear_refs also lowers ru_maxrss (both read the mm's high-water mark),
        # so the process peak is the largest of the phase peaks and what ru_maxrss still remembers
        "peak_rss_gb": max(value for value in (maxrss_gb(), first_peak, steady_peak) if value is not None),
        "n_params": sum(p.numel() for p in model.parameters()),
    }
    if impl == "compiled" and steady:
        result["compile_s"] = first - statistics.median(steady)  # the first call's extra time
    if training:
        # sanity check of the training step: every trainable parameter should have received a gradient
        result["params_with_grad"] = sum(p.grad is not None for p in params)
        result["params_trainable"] = len(params)
    return result


def measure_matmul(spec: dict[str, Any]) -> dict[str, Any]:
    """Best and median GFLOP/s of a square torch.mm per dtype (the 'matmul peak' of this machine now)."""
    size = spec.get("size", 4096)
    budget_s = spec.get("budget_s", 3.0)
    out: dict[str, Any] = {"size": size}
    for name in spec.get("dtypes", ["fp32", "bf16"]):
        dtype = DTYPES[name]
        a = torch.randn(size, size).to(dtype)
        b = torch.randn(size, size).to(dtype)
        torch.mm(a, b)  # warm-up (thread pool, oneDNN kernel selection)
        times: list[float] = []
        spent = 0.0
        while len(times) < 3 or (spent < budget_s and len(times) < 20):
            start = time.perf_counter()
            torch.mm(a, b)
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            spent += elapsed
        flops = 2.0 * size**3
        out[name] = {
            "best_gflops": flops / min(times) / 1e9,
            "median_gflops": flops / statistics.median(times) / 1e9,
            "repeats": len(times),
        }
    return out


def measure_flops(spec: dict[str, Any]) -> dict[str, Any]:
    """Matmul FLOPs of one fp32 inference forward as counted by torch.utils.flop_counter.FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(spec.get("seed", 0))
    model, call = BUILDERS[spec["model"]]()
    model.eval()
    ids = torch.randint(3, model.config.vocab_size - 64, (1, spec["length"]))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call(ids)
    by_op = {str(op): int(count) for op, count in counter.get_flop_counts()["Global"].items()}
    return {"counted_flops": int(counter.get_total_flops()), "by_op": by_op}


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: _worker.py '<json spec>' (run by benchmarks/bench_encoder.py)")
    spec = json.loads(sys.argv[1])
    pin_threads(spec.get("threads"))
    impl = spec["impl"]
    if impl in BUILDERS:
        result = measure_model(spec)
    elif impl == "matmul":
        result = measure_matmul(spec)
    elif impl == "flops":
        result = measure_flops(spec)
    else:
        raise ValueError(f"unknown impl {impl!r}: expected one of {sorted(BUILDERS) + ['matmul', 'flops']}")
    result.update(**run_info(spec), python=sys.executable)
    print_result(result)


if __name__ == "__main__":
    main()
