"""One measured run for `bench_plan.py` in a fresh process (not run by hand).

    python benchmarks/_plan_worker.py '<json spec>'

The spec: {"size": "tiny" | "base" | "large", "task": "train" | "generate", "length": int, "batch": int,
"beams": int, "new_tokens": int, "label_tokens": int, "dtype": "fp32" | "bf16", "gradient_checkpointing": bool,
"optimizer": "adamw" | "adafactor" | "sgd", "threads": int, "seed": int}.

The model has the preset's architecture (`random_init_sources`) and random weights: it is built on the meta
device, materialised with `to_empty` and filled with N(0, 0.02) (cheaper than each module's own init, and every
page is written, so it is resident). Memory:
- `baseline` is the RSS after importing torch, transformers and mega2bart, before the model exists;
- `VmHWM` (the peak RSS) is reset (`echo 5 > /proc/self/clear_refs`) after the build, then read after the run;
- `measured_peak_bytes` = that peak - baseline: weights, the run's tensors and whatever the allocator and the
  libraries keep (the planner's calibrated "rest").
Generation: `model.generate` (mega2bart's shared-encoder path), `new_tokens` forced (min = max), batch rows of
random ids; with batch > 1 the last row ends in 8 padding tokens. Training: `model.train()`, two steps of
forward with `label_tokens` labels + backward + optimiser step + `zero_grad(set_to_none=True)` (the peak
includes the optimiser states, created at the first step); bf16 training is CPU autocast (the Trainer's
`bf16=True`), bf16 generation casts the model. `seconds` is the generate call or the second training step.
The result is one line `BENCH_RESULT <json>` on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repo root, in case mega2bart is not installed

import transformers  # noqa: E402,F401

import mega2bart  # noqa: E402,F401
from mega2bart.modeling_mega2bart import Mega2BartModel  # noqa: E402
from mega2bart.models.mega.configuration_mega import MegaConfig  # noqa: E402
from mega2bart.models.mega.modeling_mega import MegaModel  # noqa: E402
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


def run(spec: dict) -> dict:
    torch.set_num_threads(spec["threads"])
    baseline = rss_bytes()
    bf16 = spec["dtype"] == "bf16"
    generating = spec["task"] == "generate"
    model = build(spec["size"], torch.bfloat16 if bf16 and generating else torch.float32)
    model_rss = rss_bytes()
    ids, mask = inputs(spec, model.config.encoder.vocab_size)
    result: dict = {"baseline_bytes": baseline, "model_rss_bytes": model_rss - baseline}
    if generating:
        model.eval()
        reset_hwm()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
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
        result["seconds"] = time.perf_counter() - start
        result["output_shape"] = list(out.shape)
    else:
        model.train()
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
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            steps.append(time.perf_counter() - start)
        result["seconds"] = steps[-1]
        result["step_seconds"] = steps
    result["peak_rss_bytes"] = hwm_bytes()
    result["measured_peak_bytes"] = result["peak_rss_bytes"] - baseline
    return result


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print_result({"spec": spec, **run(spec)})
