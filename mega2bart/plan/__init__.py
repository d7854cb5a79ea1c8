"""Will it fit? Peak memory and time of a mega2bart run, predicted from the configuration (`mega2bart plan`).

Nothing is instantiated: the shapes come from the presets or a saved model's `config.json`, and every figure
below is a count of the tensors that the code keeps alive, read off `models/mega/modeling_mega.py`,
`modeling_mega2bart.py` and transformers' BART. Notation: B batch, L encoder length (padded to a multiple of
the chunk C when longer than it), H/E/F/Z/N the MEGA widths (hidden, v_proj, NFFN, shared, EMA components),
d/f/h the decoder's width, FFN width and heads, T label tokens, k beams, n new tokens, s bytes per element.

What is counted (one peak per phase; the largest phase is the prediction, every phase is in `phases`):

- **weights** P x s (training: fp32 master weights; bf16 training is autocast, which also keeps a bf16
  copy of every Linear weight for backward: counted in weights). **gradients** P x 4, as far as backward has
  made them: at the tied embedding / lm_head weight the accumulation holds two more (V, d) fp32 buffers, and
  the first block's backward has every other block's gradients. **optimizer states** AdamW 2 P x 4,
  Adafactor its factored rows + columns (full for vectors), SGD none.
- **encoder activations**, training: per MEGA layer and token, what autograd saves: 11 H (layer input, EMA
  output before/after SiLU, the 2H rows of mx_proj's output kept through the u/hx views, update gate, h before
  SiLU, h - residual, the pre-norm sum, the NFFN input and its pre-norm sum), 6 E (v_proj before/after SiLU,
  mx_proj's r rows, r after SiLU, the attention output, the gated product), 5 Z, 2 F (fc1 before/after SiLU)
  in s bytes, the chunk's softmax row (C floats, fp32; plus an s copy below fp32) and the masked fp32 signal
  when there is padding or the model is not fp32. That is 118 MB per layer per 1,024 tokens for the seed
  encoder in fp32, the figure measured with saved-tensor hooks (benchmarks/README.md). With gradient
  checkpointing (per block) only each block's input is kept, and one block is recomputed during backward.
  Inference keeps no activations: the working set of one layer (the attention step, in-place gates).
- **EMA/FFT temporaries**: `_convolve` builds the (2H, L) kernel, its (H, 2L) circular layout and two rFFT
  spectra of (B, H, L+1) complex values, multiplies them and inverts: about (6 + 4B) x H L x 4 bytes at once.
  In training it is recomputed in backward (a checkpoint around the convolution), which doubles the spectra.
- **encoder states**: the encoder output (B, L, H) and its projection to the decoder width (B, L, d), which
  generation keeps for the whole call (`_project_once`).
- **cross-attention cache**: K and V (B, h, L, d/h) per decoder layer, once per input however many beams
  (`SharedCrossAttentionCache`); in training the same K, V are saved for backward. **self-attention cache**:
  K and V for B k rows and n positions per layer.
- **decoder activations**: per BART layer and label token about 13 d + 2 f (+ f with activation dropout)
  in s bytes and 1-byte dropout masks; on the CPU with attention dropout, SDPA takes its math path, which
  saves the (B, h, T, L) cross-attention probabilities (softmax, dropout mask, dropped copy) per layer.
- **logits**: training (B T, V) in s, its fp32 copy and log-softmax, plus two (B T, V) gradients in backward;
  generation five (B k, V) fp32 score tables per step.
- **the process**: what the process holds besides tensors, in every phase. CPU: the interpreter with torch,
  transformers and mega2bart loaded, which `mega2bart plan` measures in itself (`measure_process_bytes`: its RSS
  after the imports every command makes; the constant in `CPU_OVERHEAD` where the planner is a library). CUDA:
  the CUDA context, assumed (`CUDA_OVERHEAD`) until scripts/gpu_check.sh measures it.
- **load**: loading the saved model. In fp32 the safetensors weights stay memory-mapped and enter the RSS as
  they are read (the encoder's unread embedding rows never do); a bf16 generation holds the fp32 file's pages
  and the bf16 copy at once, which can be the peak of a short generation.
- **allocator**: `fraction` x the largest phase's tensors + `bytes` (the one calibration, `CPU_OVERHEAD` /
  `CUDA_OVERHEAD`). On the CPU mega2bart's commands fix glibc's malloc thresholds at start-up
  (`allocator.keep_rss_near_live`: blocks of 16 MiB or more are mmapped and go back when freed, smaller ones are
  reused from the heap), so that the RSS stays near the live tensors at no measurable CPU cost; a process with
  glibc's defaults can stay higher (`CPU_RSS_NOTE`; benchmarks/README.md, runs P2, P4 and P5).

The predicted peak is the whole process's: the process + the largest phase (RSS on the CPU, device memory on
CUDA). A frozen encoder (`freeze="encoder"`) keeps no encoder activations, gradients or optimiser states.

Time: FLOPs are counted as in benchmarks/README.md (projections, chunked attention, EMA kernel; BART's
projections and attention; training 3x the forward, 4x with checkpointing, which recomputes it; a frozen encoder
runs forward only). The rate is a square matmul's in the run's dtype, measured on the device for a moment,
times the model's own efficiency: one random encoder layer of the planned shape timed for the planned task,
dtype and length (`measure_model_efficiency`: forward, or forward + backward; it is the CPU's and the dtype's,
0.55 on one Xeon, 0.63-0.75 on one EPYC in fp32). With `--tflops` nothing is measured: the matmuls run at that
rate and the rest of the work at (1 / `MODEL_EFFICIENCY` - 1) of it. Decoding steps, a few rows each, run at a
second measured rate for few-row products; `STEP_SECONDS` adds each decoding step's fixed cost; a training step
adds the optimiser's pass over the trained parameters (ns per parameter measured for the planned optimiser,
`measure_optimizer_cost`, or assumed with `--tflops`: `OPTIMIZER_NS_PER_PARAMETER`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .fit import fit_report, fix_message, parse_bytes
from .memory import (
    BREAKDOWN_KEYS,
    CPU_OVERHEAD,
    CUDA_OVERHEAD,
    _encoder_layer_saved,  # noqa: F401 (tests read it as mega2bart.plan._encoder_layer_saved)
    memory_phases,
    overhead,
    padded_length,
)
from .predict import CPU_RSS_NOTE, CUDA_NOTE, Plan, measure_process_bytes, plan_run
from .shapes import (
    DTYPE_BYTES,
    GIB,
    DecoderShape,
    Device,
    Dtype,
    EncoderShape,
    ModelShape,
    Optimizer,
    PlanError,
    Task,
    Workload,
    load_shape,
)
from .timing import (
    MODEL_EFFICIENCY,
    OPTIMIZER_NS_PER_PARAMETER,
    SMALL_ROW_SHARE,
    STEP_SECONDS,
    MatmulRate,
    decoder_token_flops,
    encoder_forward_flops,
    measure_matmul_rate,
    measure_model_efficiency,
    measure_optimizer_cost,
    measure_workload_rate,
    one_layer_encoder,
    source_projection_flops,
)

__all__ = [
    "BREAKDOWN_KEYS",
    "CPU_RSS_NOTE",
    "CUDA_NOTE",
    "CPU_OVERHEAD",
    "CUDA_OVERHEAD",
    "DTYPE_BYTES",
    "DecoderShape",
    "Device",
    "Dtype",
    "EncoderShape",
    "GIB",
    "MODEL_EFFICIENCY",
    "OPTIMIZER_NS_PER_PARAMETER",
    "STEP_SECONDS",
    "MatmulRate",
    "ModelShape",
    "Optimizer",
    "Plan",
    "PlanError",
    "SMALL_ROW_SHARE",
    "Task",
    "Workload",
    "decoder_token_flops",
    "encoder_forward_flops",
    "fit_report",
    "fix_message",
    "format_report",
    "load_shape",
    "measure_matmul_rate",
    "measure_model_efficiency",
    "measure_optimizer_cost",
    "measure_workload_rate",
    "one_layer_encoder",
    "measure_process_bytes",
    "memory_phases",
    "overhead",
    "padded_length",
    "parse_bytes",
    "plan_report",
    "plan_run",
    "preflight_check",
    "preflight_generate",
    "preflight_train",
    "source_projection_flops",
]


# ----------------------------------------------------------------------------------------------
# the pre-flight check of train / summarize / eval on CUDA
# ----------------------------------------------------------------------------------------------


def _cuda_free_bytes() -> int | None:
    """Free memory of the current CUDA device, or None without CUDA (tests replace this function)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return int(torch.cuda.mem_get_info()[0])


def preflight_check(model: str | Path, workload: Workload, command: str = "plan") -> Plan | None:
    """On CUDA: raise PlanError with the fix when the plan's peak exceeds the free device memory.

    `command` names the command being checked ("train", or "generate" for eval and summarize), so that the fix
    is written with its flags. Does nothing off CUDA or for a model the planner does not know (returns None then)."""
    if workload.device != "cuda":
        return None
    free = _cuda_free_bytes()
    if free is None:
        return None
    try:
        shape = load_shape(model)
    except PlanError:
        return None
    result = plan_run(shape, workload)
    # the total includes the CUDA context, which this process already holds: free memory was measured after it
    available = free + result.process_bytes
    if result.peak_bytes > available:
        report = fit_report(shape, workload, available, command)
        message = fix_message(
            result.peak_bytes, available, report["changes"], "available (free + this process's context)"
        )
        raise PlanError(f"this run does not fit the GPU: {message} (--no-plan-check skips this check)")
    return result


# ----------------------------------------------------------------------------------------------
# the report of `mega2bart plan`
# ----------------------------------------------------------------------------------------------


def plan_report(
    model_or_preset: str | Path,
    workload: Workload,
    device_memory: str | None = None,
    tflops: float | None = None,
    measure_process: bool = True,
) -> dict[str, Any]:
    """What `mega2bart plan` prints: the plan as a dict (`peak_bytes`, `seconds`, `breakdown`, ...), with `fit`
    when `device_memory` ("24GiB") is given. The matmul rate is measured on `workload.device` unless `tflops`.
    On the CPU the process's share is this process's own RSS (`measure_process_bytes`: a fresh `mega2bart plan`
    holds what a fresh `mega2bart summarize` or `train` holds before its model) unless `measure_process` is False
    (then the measured constant of `CPU_OVERHEAD`)."""
    memory = parse_bytes(device_memory) if device_memory is not None else None
    shape = load_shape(model_or_preset)
    process = measure_process_bytes() if measure_process and workload.device == "cpu" else None
    source = "measured: this process's RSS after the imports of a mega2bart command" if process else None
    rate = measure_workload_rate(shape.encoder, workload, tflops)
    report = plan_run(shape, workload, rate, process, source).as_dict()
    report["overhead_calibration"] = dict(overhead(workload.device))
    if memory is not None:
        report["fit"] = fit_report(shape, workload, memory, process_bytes=process)
    return report


# the breakdown's names where a key alone would not say what it is
LABELS = {
    "process": "process (interpreter, libraries)",
    "load": "checkpoint pages (load)",
    "allocator": "allocator",
}


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of `plan_report`'s dict."""
    w = report["workload"]
    what = (
        f"generate {w['new_tokens']} tokens with {w['beams']} beam(s)"
        if w["task"] == "generate"
        else f"train on {w['label_tokens']} label tokens, {w['optimizer']}"
        + (", gradient checkpointing" if w["gradient_checkpointing"] else "")
    )
    lines = [
        f"{report['model']}: {report['parameters']['total']:,} parameters; {what}; {w['length']:,} input tokens, "
        f"batch {w['batch']}, {w['dtype']} on {w['device']}",
        f"predicted peak of the whole process {report['peak_bytes'] / GIB:.2f} GiB ({report['peak_bytes'] / 1e9:.2f} "
        f"GB{', GPU memory' if w['device'] == 'cuda' else ', RSS'}), in phase '{report['peak_phase']}':",
    ]
    for key, value in report["breakdown"].items():
        if value:
            label = LABELS.get(key, key.replace("_", " "))
            lines.append(f"  {label:36s} {value / GIB:9.3f} GiB")
    lines.append(f"  (process: {report['process_source']})")
    lines.append("phases: " + ", ".join(f"{name} {value / GIB:.2f} GiB" for name, value in report["phases"].items()))
    rate = report["matmul_tflops"]
    lines.append(
        f"{report['flops'] / 1e12:.2f} TFLOP, about {report['seconds']:.1f} s at {rate['large']:.3g} TFLOP/s "
        f"({rate['source']}; few-row products {rate['small']:.3g})"
    )
    if rate.get("efficiency") is not None:
        lines.append(f"  the model's work at {rate['efficiency']:.0%} of that rate ({rate['efficiency_source']})")
    if w["task"] == "train":
        measured = rate.get("optimizer_ns") is not None
        cost = rate["optimizer_ns"] if measured else OPTIMIZER_NS_PER_PARAMETER[w["optimizer"]]
        lines.append(
            f"  the optimiser step at {cost:.2f} ns per trained parameter ({'measured' if measured else 'assumed'})"
        )
    lines += [f"note: {note}" for note in report["notes"]]
    fit = report.get("fit")
    if fit:
        verdict = "fits" if fit["fits"] else "does NOT fit"
        lines.append(f"{verdict} in {fit['device_memory'] / GIB:.1f} GiB")
        largest = ", ".join(
            f"{name} {value if value is not None else 'none'}" for name, value in fit["largest"].items()
        )
        lines.append(f"largest that fit (one at a time, the rest as given): {largest}")
        if not fit["fits"]:
            lines.append(fix_message(fit["peak_bytes"], fit["device_memory"], fit["changes"], "available"))
    return "\n".join(lines)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def preflight_generate(
    model: str | Path,
    max_input_tokens: int | None,
    batch_size: int,
    num_beams: int | None,
    max_new_tokens: int | None,
    dtype: str,
) -> Plan | None:
    """`summarize` / `eval` on CUDA: the plan of one generate call at the full context, against free memory.

    Unset values come from the model directory (generation_config.json, tokenizer_config.json)."""
    if _cuda_free_bytes() is None:
        return None
    path = Path(model)
    generation = _read_json(path / "generation_config.json")
    context = max_input_tokens or _read_json(path / "tokenizer_config.json").get("model_max_length")
    if not isinstance(context, int) or context > 10**7:
        encoder = _read_json(path / "config.json").get("encoder")
        context = encoder.get("max_positions", 16384) if isinstance(encoder, dict) else 16384
    try:
        workload = Workload(
            task="generate",
            length=int(context),
            batch=batch_size,
            beams=int(num_beams or generation.get("num_beams") or 1),
            new_tokens=int(max_new_tokens or generation.get("max_new_tokens") or 256),
            dtype=dtype if dtype in DTYPE_BYTES else "fp32",  # type: ignore[arg-type]
            device="cuda",
        )
    except (PlanError, TypeError, ValueError):  # damaged files: the model's loader names what is wrong
        return None
    return preflight_check(model, workload, "generate")


def preflight_train(config: Any) -> Plan | None:
    """`train` on CUDA (a `TrainConfig`): the plan of one training step against free device memory."""
    if config.use_cpu or _cuda_free_bytes() is None:
        return None
    extra = config.extra_training_args
    optim = str(extra.get("optim", "adamw"))
    workload = Workload(
        task="train",
        length=config.max_source_length,
        batch=config.per_device_train_batch_size,
        label_tokens=config.max_target_length,
        dtype="bf16" if config.resolved_bf16() else ("fp16" if extra.get("fp16") else "fp32"),
        gradient_checkpointing=bool(config.gradient_checkpointing),
        optimizer="adafactor" if "adafactor" in optim else ("sgd" if optim == "sgd" else "adamw"),
        device="cuda",
        # a frozen decoder is planned as training everything (an upper bound: its gradients are not kept)
        freeze="encoder" if config.freeze == "encoder" else "none",
    )
    return preflight_check(config.model, workload, "train")
