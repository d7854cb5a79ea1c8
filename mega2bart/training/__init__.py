"""Fine-tuning: one `TrainConfig` -> `Seq2SeqTrainer` with generation-based ROUGE.

`TrainConfig` is the single source of truth for a run: each setting is one field, declared once
with its help (which is also the `mega2bart train` option's help, see `mega2bart.config_types`),
built from CLI flags and/or a YAML file (`TrainConfig.load`), checked in `__post_init__`, converted
to `Seq2SeqTrainingArguments` by `to_training_arguments()` and written, resolved, to
`<output_dir>/train_config.yaml`.
`train(config)` runs it and writes `<output_dir>/metrics.json` beside the checkpoints.

Long-document defaults and why:
- `bf16="auto"` turns bf16 mixed precision on only where CUDA supports bf16. On CPU "auto" means
  off: CPU autocast to bf16 is slow without AMX and changes the numerics of the tests; pass
  `bf16=True` to force it (fp16 is not offered: NaNs in T5-like models, transformers #17978).
- `gradient_checkpointing=True`: MEGA blocks and BART layers recompute activations in backward.
- `gradient_accumulation_steps=16` at batch size 1, with a loss that is right under accumulation:
  the model class from `mega2bart.modeling_mega2bart` normalises by the Trainer's
  `num_items_in_batch`; for any other model class the Trainer is told the model does not take
  loss kwargs, so it divides each micro-batch mean by the accumulation steps (transformers #47688).
- `eval_accumulation_steps=8`: generated ids move to the CPU every 8 eval batches, not at the end.
- Label smoothing (`label_smoothing > 0`) is the Trainer's `LabelSmoother`; the collator then adds
  `decoder_input_ids` from the labels (transformers PR #9844).

Staged training (`warm_start_steps=N`): for the first N optimiser steps only the new
encoder->decoder projection (`enc_to_dec_proj`) and the decoder's cross-attention
(`encoder_attn`, `encoder_attn_layer_norm`) train; then every parameter not frozen by
`freeze` does. The optimiser holds all parameters from the start; parameters with no gradient are
left alone by AdamW (no update, no weight decay, no state), so the switch costs nothing and a
resumed run switches at the same step.

Resuming: `resume_from_checkpoint="auto"` (the default) continues from the newest complete
`checkpoint-*` in `output_dir` if there is one (a checkpoint cut short by a crash is skipped, with a
warning saying why). The Trainer restores weights, optimiser, scheduler, RNG states and the
position in the data; the group_by_length order of an epoch depends only on (seed, epoch)
(`EpochSeededLengthGroupedSampler`), so on CPU a run resumed anywhere, mid-epoch included, ends
with the weights of an uninterrupted one (tested).

Length curriculum (`curriculum="2048:500:0.05:4,4096:300"`): before the main run, rungs at shorter input
lengths train one after the other, each from the previous one's weights with a fresh optimiser (warm-up, then
a constant rate) until its stop loss or its step cap; the main run starts from the last rung's weights. Rungs
save in `output_dir/curriculum/rung-LENGTH/` with a record (`rung.json`) of their settings and result: a rerun
reuses the finished ones, resumes an interrupted one from its newest checkpoint, and refuses a rung trained with
other settings. `metrics.json` reports each rung (steps, whether it ended at its loss or its cap, s/step).

Several processes: `torchrun --nproc_per_node 2 -m mega2bart.cli train ...` or
`accelerate launch [--config_file fsdp.yaml] -m mega2bart.cli train ...` run the same code under
DDP (gloo on CPU, NCCL on CUDA). FSDP and DeepSpeed come from the accelerate config file
(`accelerate config`), not from `TrainConfig`; see `configs/README.md`.

One module per concern:

- `config`: `TrainConfig`, its checks and its `Seq2SeqTrainingArguments`.
- `splits`: the train and eval splits, loaded and tokenized (in memory or streamed).
- `parameters`: `apply_freeze`, the bridge that always trains, `WarmStartCallback`.
- `trainer`: `SummarizationTrainer`, its resumable group_by_length sampler, the other callbacks.
- `curriculum`: the length curriculum's rungs (`curriculum`), each rung's settings and its record.
- `checkpoints`: complete checkpoints, the one to resume from, a previous run in `output_dir`.
- `run`: `build_trainer` and `train`, a short sequence of the above.
"""

from __future__ import annotations

from .checkpoints import (
    INCOMPLETE_PREFIX,
    checkpoint_problem,
    newest_complete_checkpoint,
    prepare_output_dir,
    resolve_checkpoint,
)
from .config import CONFIG_FILE, METRICS_FILE, REPORTERS, TrainConfig
from .curriculum import CURRICULUM_DIR, RUNG_RECORD, parse_curriculum, rung_lines
from .parameters import WarmStartCallback, apply_freeze, is_bridge_parameter
from .run import build_trainer, train
from .splits import STREAM_SHUFFLE_BUFFER
from .trainer import EpochSeededLengthGroupedSampler, ShipBuildFilesCallback, StopAtLossCallback, SummarizationTrainer

__all__ = [
    "CONFIG_FILE",
    "CURRICULUM_DIR",
    "INCOMPLETE_PREFIX",
    "METRICS_FILE",
    "REPORTERS",
    "RUNG_RECORD",
    "STREAM_SHUFFLE_BUFFER",
    "EpochSeededLengthGroupedSampler",
    "ShipBuildFilesCallback",
    "StopAtLossCallback",
    "SummarizationTrainer",
    "TrainConfig",
    "WarmStartCallback",
    "apply_freeze",
    "build_trainer",
    "checkpoint_problem",
    "is_bridge_parameter",
    "newest_complete_checkpoint",
    "parse_curriculum",
    "prepare_output_dir",
    "resolve_checkpoint",
    "rung_lines",
    "train",
]
