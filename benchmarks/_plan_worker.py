"""One measured run for `bench_plan.py` in a fresh process (not run by hand).

    python benchmarks/_plan_worker.py '<json spec>'
    python benchmarks/_plan_worker.py --save SIZE DIR     # a random model of the preset, saved for "load": "disk"

The spec: {"size": "tiny" | "base" | "large", "task": "train" | "generate", "length": int, "batch": int,
"beams": int, "new_tokens": int, "label_tokens": int, "dtype": "fp32" | "bf16", "gradient_checkpointing": bool,
"optimizer": "adamw" | "adafactor" | "sgd", "threads": int, "seed": int}, and optionally "freeze": "none" |
"encoder" (`mega2bart.training.apply_freeze`), "load": "build" | "disk" (with "model_dir"), "malloc":
"mega2bart" | "glibc" | {"mmap_threshold": bytes, "trim_threshold": bytes}, "malloc_trim": bool.

The process starts as a mega2bart command does: it imports what `mega2bart.cli` imports and, unless "malloc"
is "glibc", fixes glibc's thresholds with `mega2bart.plan.allocator.keep_rss_near_live` (the CLI's start-up;
given thresholds: those instead, `bench_malloc.py`); "malloc_trim" hands the heap's free pages back after every
training step (`mega2bart.plan.allocator.trim_heap`).
The model has the preset's architecture (`random_init_sources`) and random weights. "build" (the default):
built on the meta device, materialised with `to_empty` and filled with N(0, 0.02) (cheaper than each module's
own init, and every page is written, so it is resident). "disk": `Mega2BartModel.from_pretrained` of a
directory that `--save` wrote, in the run's dtype, as `summarize` / `train` load a model. Memory:
- `baseline_bytes` is the RSS after the imports, before the model exists (interpreter and libraries);
- `load_peak_bytes` is the peak RSS (`VmHWM`) from the process's start to the end of the load;
- `VmHWM` is then reset (`echo 5 > /proc/self/clear_refs`) and read after the run: `run_peak_bytes`;
- `process_peak_bytes` = the larger of the two: the whole process's peak RSS, what `mega2bart plan` predicts;
- `measured_peak_bytes` = the run's peak - baseline (runs P1-P3 compared the plan's tensors with this).
Generation: `model.generate` (mega2bart's shared-encoder path), `new_tokens` forced (min = max), batch rows of
random ids; with batch > 1 the last row ends in 8 padding tokens. Training: `model.train()`, two steps of
forward with `label_tokens` labels + backward + optimiser step + `zero_grad(set_to_none=True)` (the peak
includes the optimiser states, created at the first step); bf16 training is CPU autocast (the Trainer's
`bf16=True`), bf16 generation casts the model. `seconds` is the generate call or the second training step, and
`cpu_user_s` / `cpu_sys_s` its CPU time (user; system: page faults and mmap calls, what the allocator setting costs),
`process_cpu_s` the whole process's (imports and load included).
The result is one line `BENCH_RESULT <json>` on stdout.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, in case mega2bart is not installed

import transformers  # noqa: E402,F401

import mega2bart  # noqa: E402,F401
import mega2bart.cli  # noqa: E402,F401 (what every command has imported when it starts)
from mega2bart.modeling_mega2bart import Mega2BartModel  # noqa: E402
from mega2bart.models.mega.configuration_mega import MegaConfig  # noqa: E402
from mega2bart.models.mega.modeling_mega import MegaModel  # noqa: E402
from mega2bart.plan.allocator import keep_rss_near_live, trim_heap  # noqa: E402
from mega2bart.presets import random_init_sources  # noqa: E402

sys.path.insert(0, str(HERE))
from _harness import hwm_bytes, print_result, rss_bytes  # noqa: E402
from _harness import reset_hwm_or_fail as reset_hwm  # noqa: E402 (the measured peak needs the reset)


def build(size: str, dtype: torch.dtype) -> Mega2BartModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    encoder_config, decoder_config = random_init_sources(size)
    encoder_config = MegaConfig(**{**encoder_config, "use_pooler": False})
    decoder = AutoConfig.for_model("bart", **decoder_config)
    decoder.is_decoder = decoder.add_cross_attention = True
    with torch.device("meta"):
        model = Mega2BartModel(
            encoder=MegaModel(encoder_config, add_pooling_layer=False),
            decoder=AutoModelForCausalLM.from_config(decoder),
        )
    model = model.to(dtype).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.02, generator=generator)
        for buffer in model.buffers():
            buffer.zero_()
    model.tie_weights()
    config = model.config
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 2, 1, 2
    return model


def inputs(spec: dict, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(spec["seed"])
    ids = torch.randint(4, vocab, (spec["batch"], spec["length"]), generator=generator)
    mask = torch.ones_like(ids)
    if spec["batch"] > 1:
        mask[-1, -8:] = 0
        ids[-1, -8:] = 1
    return ids, mask


def load(spec: dict, dtype: torch.dtype) -> Mega2BartModel:
    if spec.get("load", "build") == "build":
        return build(spec["size"], dtype)
    model = Mega2BartModel.from_pretrained(spec["model_dir"], dtype=dtype)  # as `load_mega2bart` does
    return model.to(dtype)


def generate(model: Mega2BartModel, spec: dict, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A generation row's call: `spec["beams"]` beams, exactly `spec["new_tokens"]` new tokens, greedy."""
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        num_beams=spec["beams"],
        max_new_tokens=spec["new_tokens"],
        min_new_tokens=spec["new_tokens"],
        do_sample=False,
        decoder_start_token_id=2,
        pad_token_id=1,
        eos_token_id=2,
    )


def cpu_seconds() -> tuple[float, float]:
    """This process's user and system CPU seconds so far (system: page faults, mmap/munmap)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run(spec: dict) -> dict:
    setting = spec.get("malloc", "mega2bart")
    malloc = (
        {}
        if setting == "glibc"
        else keep_rss_near_live(**setting)
        if isinstance(setting, dict)
        else keep_rss_near_live()
    )
    torch.set_num_threads(spec["threads"])
    baseline = rss_bytes()
    bf16 = spec["dtype"] == "bf16"
    generating = spec["task"] == "generate"
    model = load(spec, torch.bfloat16 if bf16 and generating else torch.float32)
    model_rss = rss_bytes()
    ids, mask = inputs(spec, model.config.encoder.vocab_size)
    result: dict = {
        "baseline_bytes": baseline,
        "model_rss_bytes": model_rss - baseline,
        "load_peak_bytes": hwm_bytes(),
        "malloc": malloc,
    }
    if generating:
        model.eval()
        reset_hwm()
        start, cpu = time.perf_counter(), cpu_seconds()
        with torch.inference_mode():
            out = generate(model, spec, ids, mask)
        result["seconds"] = time.perf_counter() - start
        result["cpu_user_s"], result["cpu_sys_s"] = (b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
        result["output_shape"] = list(out.shape)
    else:
        model.train()
        if spec.get("freeze", "none") != "none":
            from mega2bart.training import apply_freeze

            apply_freeze(model, spec["freeze"])
        if spec["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        labels = torch.randint(4, model.config.decoder.vocab_size, (spec["batch"], spec["label_tokens"]))
        if spec["optimizer"] == "adamw":
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        elif spec["optimizer"] == "adafactor":
            optimizer = torch.optim.Adafactor(model.parameters(), lr=1e-5)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
        reset_hwm()
        steps = []
        for _ in range(2):
            start, cpu = time.perf_counter(), cpu_seconds()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if spec.get("malloc_trim"):
                trim_heap()
            steps.append(time.perf_counter() - start)
        result["seconds"] = steps[-1]
        result["cpu_user_s"], result["cpu_sys_s"] = (b - a for a, b in zip(cpu, cpu_seconds(), strict=True))
        result["step_seconds"] = steps
    result["peak_rss_bytes"] = result["run_peak_bytes"] = hwm_bytes()
    result["measured_peak_bytes"] = result["peak_rss_bytes"] - baseline
    result["process_peak_bytes"] = max(result["load_peak_bytes"], result["run_peak_bytes"])
    result["process_cpu_s"] = sum(cpu_seconds())
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--save":
        build(sys.argv[2], torch.float32).save_pretrained(sys.argv[3])
    else:
        spec = json.loads(sys.argv[1])
        print_result({"spec": spec, **run(spec)})
