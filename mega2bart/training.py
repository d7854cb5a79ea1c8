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

Several processes: `torchrun --nproc_per_node 2 -m mega2bart.cli train ...` or
`accelerate launch [--config_file fsdp.yaml] -m mega2bart.cli train ...` run the same code under
DDP (gloo on CPU, NCCL on CUDA). FSDP and DeepSpeed come from the accelerate config file
(`accelerate config`), not from `TrainConfig`; see `configs/README.md`.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from transformers import (
    PreTrainedModel,
    PrinterCallback,
    ProgressCallback,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_pt_utils import LengthGroupedSampler

from mega2bart.config_types import RunConfig, read_yaml_mapping, setting

logger = logging.getLogger(__name__)

CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"
REPORTERS = ("none", "tensorboard", "wandb")
_REPORTER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}
# parameter names of the bridge between encoder and decoder: the random projection and BART's
# cross-attention (self.encoder_attn / self.encoder_attn_layer_norm in each decoder layer)
_BRIDGE_PATTERN = re.compile(r"(^|\.)(enc_to_dec_proj|encoder_attn|encoder_attn_layer_norm)(\.|$)")


@dataclass
class TrainConfig(RunConfig):
    """Everything a fine-tuning run needs; the YAML keys are these field names.

    Each field is declared once, with `setting()`: its help is the `mega2bart train` option's help
    (fields with a `flag`; the others are set with `--set KEY=VALUE` or in the YAML file), and its
    `training_arg` says whether it goes to `Seq2SeqTrainingArguments` (`to_training_arguments`).
    """

    file_name: ClassVar[str] = CONFIG_FILE

    model: str = setting(
        flag=True, help="Directory of a built model (`mega2bart build`) or a checkpoint of an earlier run."
    )
    dataset: str = setting(
        "aclsum",
        flag=True,
        help='"aclsum" (offline), a local .json/.jsonl/.csv/.parquet file, or a Hugging Face Hub name.',
    )
    output_dir: str = setting(
        "runs/train",
        flag=True,
        training_arg=True,
        help="Where checkpoints, the final model, `train_config.yaml` and `metrics.json` go.",
    )
    dataset_config: str | None = setting(
        None, help='The Hub configuration of `dataset` ("arxiv" for "scientific_papers").'
    )
    text_column: str | None = setting(
        None, help='Document column; default from `mega2bart.data.KNOWN_COLUMNS`, else "document".'
    )
    summary_column: str | None = setting(
        None, help='Summary column; default from `mega2bart.data.KNOWN_COLUMNS`, else "summary".'
    )
    train_split: str = setting("train", help="Split to train on.")
    eval_split: str | None = setting(
        "validation",
        flag=True,
        aliases={"none": None, "": None},
        help='Split for evaluation during and after training; None or "" skips evaluation '
        '(on the command line: "none").',
    )
    max_train_samples: int | None = setting(
        None, flag=True, min=1, help="Use at most this many training examples (None: all)."
    )
    max_eval_samples: int | None = setting(
        None,
        flag=True,
        min=1,
        help="Use at most this many evaluation examples (None: all); generation makes evaluation slow.",
    )
    streaming: bool = setting(
        False,
        flag=True,
        help="""Read the training split as a stream (`datasets` streaming: a Hub dataset is not downloaded
        whole), tokenized as it is read and shuffled in a buffer of 1,000 rows; the data has no known
        length, so `max_steps` is the stopping rule (the stream starts again when it ends). An eval
        split is then read as a stream too, its first `max_eval_samples` rows.""",
    )
    max_source_length: int = setting(
        16384,
        flag=True,
        min=1,
        help="Documents are cut to this many tokens (specials included); the MEGA seed encoder has 16,384.",
    )
    max_target_length: int = setting(512, flag=True, min=1, help="Summaries are cut to this many tokens for training.")
    pad_to_multiple_of: int | None = setting(
        None, min=1, help="Pad each batch to a multiple of this (None: 8); MEGA pads to its chunk_size inside."
    )
    per_device_train_batch_size: int = setting(
        1, flag="--batch-size", min=1, training_arg=True, help="Documents per device per micro-batch."
    )
    per_device_eval_batch_size: int = setting(
        1, min=1, training_arg=True, help="Documents per device per evaluation batch."
    )
    gradient_accumulation_steps: int = setting(
        16,
        flag=True,
        min=1,
        training_arg=True,
        help="Micro-batches per optimiser step; the loss is normalised over all their label tokens.",
    )
    learning_rate: float = setting(5e-5, flag=True, above=0, training_arg=True, help="Peak learning rate (AdamW).")
    weight_decay: float = setting(
        0.01,
        min=0,
        note="0: no weight decay",
        training_arg=True,
        help="AdamW weight decay (not applied to biases and norms).",
    )
    warmup_steps: float = setting(
        0.05,
        training_arg=False,  # to_training_arguments passes a step count as an int
        help="Linear warm-up: an int >= 1 is a step count, a float in [0, 1) a fraction of all steps.",
    )
    lr_scheduler_type: str = setting(
        "linear",
        training_arg=True,
        help='Learning-rate schedule after warm-up: "linear", "cosine", "constant_with_warmup", ...',
    )
    max_grad_norm: float = setting(
        1.0, min=0, note="0: no gradient clipping", training_arg=True, help="Gradient clipping norm."
    )
    num_train_epochs: float = setting(3.0, flag=True, training_arg=True, help="Epochs, unless `max_steps` > 0.")
    max_steps: int = setting(
        -1, flag=True, training_arg=True, help="Optimiser steps; > 0 overrides `num_train_epochs`."
    )
    label_smoothing: float = setting(
        0.0,
        flag=True,
        training_arg="label_smoothing_factor",
        help="Label smoothing in [0, 1); 0.1 is common for summarisation.",
    )
    bf16: bool | Literal["auto"] = setting(
        "auto",
        flag=True,
        choices={"auto": "auto", "true": True, "false": False},
        training_arg=False,
        help='bf16 mixed precision: "auto" = on iff CUDA supports bf16 (off on CPU); true forces it.',
    )
    gradient_checkpointing: bool = setting(
        True,
        flag=True,
        training_arg="activation_checkpointing",
        help="Recompute activations in backward (MEGA blocks and BART layers): far less memory, ~20-30% slower.",
    )
    freeze: Literal["none", "encoder", "decoder"] = setting(
        "none",
        flag=True,
        help=""""encoder": MEGA is not trained. "decoder": BART's self-attention, feed-forward, embeddings
        and LM head are not trained. The projection and cross-attention always train.""",
    )
    stop_at_loss: float | None = setting(
        None,
        above=0.0,
        note="None: train all `max_steps`",
        help="Stop once the mean of the last `stop_at_loss_logs` logged training losses is below this: a run whose "
        "loss falls late (a phase change after a plateau) gets a generous `max_steps` and ends when it is done.",
    )
    stop_at_loss_logs: int = setting(
        3, min=1, help="Logged training losses (every `logging_steps`) averaged for `stop_at_loss`."
    )
    warm_start_steps: int = setting(
        0,
        flag=True,
        min=0,
        note="0: no warm start",
        help="Staged training: the first N steps train only the projection and the cross-attention.",
    )
    eval_steps: int | None = setting(
        None,
        flag=True,
        min=1,
        training_arg=True,
        help="Evaluate (generate + ROUGE) every N steps; None: once per epoch (never if no eval split).",
    )
    save_steps: int = setting(
        500,
        flag=True,
        min=1,
        training_arg=True,
        help="Save a checkpoint every N optimiser steps (plus one at the end).",
    )
    save_total_limit: int | None = setting(
        3, min=1, training_arg=True, help="Keep at most this many checkpoints (None: all)."
    )
    logging_steps: int = setting(10, min=1, training_arg=True, help="Log the training loss every N steps.")
    eval_accumulation_steps: int | None = setting(
        8,
        min=1,
        training_arg=True,
        help="Move generated ids to the CPU every N eval batches (None: keep all on the device).",
    )
    generation_max_new_tokens: int = setting(
        256,
        min=1,
        help="""Maximum summary length in new tokens when generating for evaluation (other settings: the
        model's generation_config.json).""",
    )
    generation_num_beams: int = setting(
        1,
        min=1,
        training_arg=True,
        help="Beams when generating for evaluation (1 = greedy; beams multiply encoder memory).",
    )
    train_sampling_strategy: Literal["random", "group_by_length"] = setting(
        "group_by_length",
        training_arg=True,
        help='"group_by_length" batches documents of similar length together (less padding).',
    )
    seed: int = setting(42, flag=True, training_arg=True, help="Seed for initialisation, dropout and data order.")
    full_determinism: bool = setting(
        False, training_arg=True, help="Deterministic algorithms everywhere (slower; for exact reproducibility on GPU)."
    )
    dataloader_num_workers: int = setting(0, min=0, training_arg=True, help="Worker processes for data loading.")
    report_to: Literal["none", "tensorboard", "wandb"] = setting(
        "none",
        flag=True,
        training_arg=True,
        help="Where to report logs besides `trainer_state.json` and `metrics.json`.",
    )
    run_name: str | None = setting(None, training_arg=True, help="Run name for tensorboard/wandb.")
    resume_from_checkpoint: str | None = setting(
        "auto",
        flag="--resume",
        aliases={"none": None},
        training_arg=False,  # given to `Trainer.train`
        help='"auto": the newest complete checkpoint in `output_dir` if any; a path: that checkpoint; '
        'None: start fresh (on the command line: "none").',
    )
    ddp_backend: str | None = setting(
        None, training_arg=False, help='Distributed backend; None: "gloo" on CPU, the default (NCCL) on CUDA.'
    )
    use_cpu: bool | None = setting(
        None, training_arg=False, help="Train on the CPU even if CUDA is present; None: CPU iff no CUDA."
    )
    extra_training_args: dict[str, Any] = setting(
        default_factory=dict,
        help="Further `Seq2SeqTrainingArguments` fields, passed as given (for options not listed here).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()  # types and ranges of single fields
        if not self.model:
            raise ValueError("`model` is empty: pass the directory written by `mega2bart build`")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"`max_steps` ({self.max_steps}) must be > 0, or -1 to train `num_train_epochs`")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"`num_train_epochs` ({self.num_train_epochs}) must be > 0 when `max_steps` is -1")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"`seed` ({self.seed}) must be in [0, 2**32) (numpy's seed range)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` ({self.label_smoothing}) must be in [0, 1)")
        if self.warmup_steps < 0 or (self.warmup_steps >= 1 and self.warmup_steps != int(self.warmup_steps)):
            raise ValueError(
                f"`warmup_steps` ({self.warmup_steps}) must be a step count (int >= 1) or a fraction in [0, 1)"
            )
        if self.max_steps > 0 and self.warm_start_steps >= self.max_steps:
            raise ValueError(
                f"`warm_start_steps` ({self.warm_start_steps}) must be below `max_steps` ({self.max_steps}), "
                "or the full model never trains"
            )
        if self.eval_split == "":
            self.eval_split = None
        if self.streaming and self.max_steps < 1:
            raise ValueError(
                "`streaming` reads the data as a stream of unknown length, so the step count is the stopping rule: "
                f"set max_steps (now {self.max_steps}) to a positive number"
            )
        if self.streaming and self.eval_split is not None and self.max_eval_samples is None:
            raise ValueError(
                f"`streaming` reads the eval split {self.eval_split!r} as a stream too: set max_eval_samples (the "
                "rows to evaluate), or eval_split none"
            )
        if self.eval_steps is not None and self.eval_split is None:
            raise ValueError(f"`eval_steps` ({self.eval_steps}) needs an `eval_split`")
        self._check_extra_training_args()

    def _check_extra_training_args(self) -> None:
        """`extra_training_args` may name only `Seq2SeqTrainingArguments` fields that the run does not set."""
        targets = self.training_arg_targets(Seq2SeqTrainingArguments)
        owned = {*targets, *filter(None, targets.values()), *self._derived_training_args()}
        clashes = sorted(set(self.extra_training_args) & owned)
        if clashes:
            raise ValueError(f"`extra_training_args` sets {clashes}, which TrainConfig sets itself: use those fields")
        known = {f.name for f in dataclasses.fields(Seq2SeqTrainingArguments)}
        unknown = sorted(set(self.extra_training_args) - known)
        if unknown:
            raise ValueError(
                f"`extra_training_args` has {unknown}, which are not Seq2SeqTrainingArguments fields: check the spelling"
            )

    # ------------------------------------------------------------------ resolution

    def resolved_bf16(self) -> bool:
        """`bf16` with "auto" resolved: True iff CUDA is used and supports bf16."""
        if self.bf16 != "auto":
            return bool(self.bf16)
        return (not self.resolved_use_cpu()) and torch.cuda.is_available() and torch.cuda.is_bf16_supported()

    def resolved_use_cpu(self) -> bool:
        return (not torch.cuda.is_available()) if self.use_cpu is None else self.use_cpu

    def resolved_ddp_backend(self) -> str | None:
        """`ddp_backend`, or "gloo" for a CPU run under torchrun/accelerate (WORLD_SIZE > 1)."""
        if self.ddp_backend:
            return self.ddp_backend
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        return "gloo" if distributed and self.resolved_use_cpu() else None

    def requested_sharding(self) -> str | None:
        """ "FSDP" or "DeepSpeed" if `extra_training_args` or `accelerate launch --config_file` ask for it."""
        extra = self.extra_training_args
        if extra.get("fsdp") or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
            return "FSDP"
        if extra.get("deepspeed") or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            return "DeepSpeed"
        return None

    def _derived_training_args(self) -> dict[str, Any]:
        """The `Seq2SeqTrainingArguments` the run derives from fields or fixes (no field passes them as they are)."""
        evaluate = self.eval_split is not None
        return {
            "warmup_steps": int(self.warmup_steps) if self.warmup_steps >= 1 else float(self.warmup_steps),
            "bf16": self.resolved_bf16(),
            "use_cpu": self.resolved_use_cpu(),
            "ddp_backend": self.resolved_ddp_backend(),
            "eval_strategy": "no" if not evaluate else ("steps" if self.eval_steps else "epoch"),
            "save_strategy": "steps",
            "logging_strategy": "steps",
            "predict_with_generate": evaluate,
            "generation_max_length": None,  # evaluation generates `generation_max_new_tokens` (SummarizationTrainer)
            "length_column_name": "length",
            "remove_unused_columns": False,  # keeps `length` for the sampler; the collator drops text columns
            # staged training leaves most parameters without gradients for a while: DDP must be told
            "ddp_find_unused_parameters": True if self.warm_start_steps else None,
        }

    def to_training_arguments(self) -> Seq2SeqTrainingArguments:
        """The `Seq2SeqTrainingArguments` of this run (the only place the two are mapped): the fields
        whose `training_arg` passes them on, what the run derives, then `extra_training_args`."""
        if self.report_to != "none" and importlib.util.find_spec(_REPORTER_PACKAGES[self.report_to]) is None:
            raise ImportError(f"report_to={self.report_to!r} needs its package: pip install {self.report_to}")
        sharding = self.requested_sharding()
        if sharding and self.resolved_use_cpu():
            # measured with accelerate 1.15: AcceleratorState turns a CPU job into MULTI_CPU (DDP) and
            # enables FSDP/DeepSpeed only for GPU-like devices, so the sharding settings would be ignored
            raise ValueError(
                f"{sharding} was requested, but this run is on the CPU, where accelerate ignores {sharding} and "
                "trains with plain DDP: run on GPUs, or drop the sharding settings (accelerate config, "
                "extra_training_args fsdp/deepspeed) to train with DDP"
            )
        return Seq2SeqTrainingArguments(
            **self.training_arguments_kwargs(Seq2SeqTrainingArguments),
            **self._derived_training_args(),
            **self.extra_training_args,
        )


# ----------------------------------------------------------------------------- parameters


_UNUSED_PREFIXES = ("encoder.pooler.",)  # computed by MegaModel, never part of the seq2seq loss


def is_bridge_parameter(name: str) -> bool:
    """True for the encoder->decoder projection and the decoder cross-attention parameters."""
    return _BRIDGE_PATTERN.search(name) is not None


def apply_freeze(model: PreTrainedModel, freeze: str) -> dict[str, int]:
    """Set `requires_grad` for `freeze` ("none" | "encoder" | "decoder"); returns parameter counts.

    The bridge (projection + cross-attention) is never frozen. The encoder's pooler (if the encoder
    has one) is always frozen: the seq2seq loss never reaches it, and under DDP a trainable parameter
    without a gradient stops the run ("Expected to have finished reduction"). Counts: {"trainable", "frozen"}.
    """
    for name, param in model.named_parameters():
        frozen = (
            name.startswith(_UNUSED_PREFIXES)
            or (freeze == "encoder" and name.startswith("encoder."))
            or (freeze == "decoder" and name.startswith("decoder.") and not is_bridge_parameter(name))
        )
        param.requires_grad_(not frozen)
    return _count(model)


def _count(model: torch.nn.Module) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


class StopAtLossCallback(TrainerCallback):
    """Ends training once the mean of the last `logs` logged training losses is below `threshold`
    (`TrainConfig.stop_at_loss`); the model is then saved as at the end of `max_steps`."""

    def __init__(self, threshold: float, logs: int) -> None:
        self.threshold, self.logs = threshold, logs
        self.losses: list[float] = []
        self.stopped_at: int | None = None

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        self.losses.append(float(logs["loss"]))
        recent = self.losses[-self.logs :]
        if len(recent) == self.logs and sum(recent) / self.logs < self.threshold:
            control.should_training_stop = True
            self.stopped_at = state.global_step
            logger.info(
                "Training loss %.4g (mean of the last %d logs) is below stop_at_loss=%g at step %d: stopping",
                sum(recent) / self.logs,
                self.logs,
                self.threshold,
                state.global_step,
            )


class WarmStartCallback(TrainerCallback):
    """Staged training: before step `warm_start_steps` only bridge parameters require gradients.

    Decided from `state.global_step` at every step, so a run resumed inside or after the warm
    start is in the right stage. Parameters frozen by `freeze` stay frozen in both stages.
    """

    def __init__(self, model: torch.nn.Module, warm_start_steps: int) -> None:
        self.model = model
        self.warm_start_steps = warm_start_steps
        # what the second stage trains: every parameter that `apply_freeze` left trainable
        self.full_trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.stage: int | None = None

    def _set_stage(self, stage: int) -> None:
        if stage == self.stage:
            return
        for name, param in self.model.named_parameters():
            param.requires_grad_(name in self.full_trainable and (stage == 2 or is_bridge_parameter(name)))
        counts = _count(self.model)
        logger.info(
            "Stage %d (%s): %d trainable parameters, %d frozen",
            stage,
            "projection + cross-attention only" if stage == 1 else "full model",
            counts["trainable"],
            counts["frozen"],
        )
        self.stage = stage

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._set_stage(1 if state.global_step < self.warm_start_steps else 2)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._set_stage(2)


# ----------------------------------------------------------------------------- the run


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order in epoch e depends only on (seed, e).

    The Trainer's sampler draws its permutation from the global torch RNG when the epoch starts.
    An uninterrupted run reaches epoch 2 with that RNG advanced by epoch 1's dropout; a run resumed
    inside epoch 2 draws from the RNG as it is before the checkpoint's RNG state is restored, so it
    gets another order and `skip_first_batches` skips the wrong documents. Reseeding a private
    generator with seed + epoch (like accelerate's `SeedableRandomSampler` for the random sampler)
    gives both runs the same order. The Trainer (and accelerate's data loader) call `set_epoch`.
    """

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, generator=torch.Generator(), **kwargs)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class SummarizationTrainer(Seq2SeqTrainer):
    """`Seq2SeqTrainer` whose evaluations during training generate with `eval_generation`
    (its lengths), not with the model's inference defaults (512 new tokens, 4 beams),
    and whose group_by_length order is a function of (seed, epoch), so resuming mid-epoch is exact."""

    def __init__(self, *args: Any, eval_generation: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eval_generation = dict(eval_generation or {})

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is not LengthGroupedSampler:
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)

    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        gen_kwargs = {**self.eval_generation, **gen_kwargs}
        # generating fills every default into model.generation_config (max_length=20, ...), which
        # checkpoints and the final model would then save: keep the inference settings as they were
        saved = copy.deepcopy(self.model.generation_config)
        try:
            return super().evaluate(
                eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix, **gen_kwargs
            )
        finally:
            self.model.generation_config = saved


_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
INCOMPLETE_PREFIX = "incomplete-"
"""Incomplete checkpoints newer than the one resumed are renamed `incomplete-checkpoint-<step>`, out
of the Trainer's way (its checkpoint rotation would count them, and a later run would skip them again)."""


def _safetensors_problem(path: Path) -> str | None:
    """Why the safetensors file `path` cannot be loaded (header or size), or None."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            header_bytes = handle.read(8)
            if len(header_bytes) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            header_length = int.from_bytes(header_bytes, "little")
            if 8 + header_length > size:
                return f"{path.name} is truncated (header of {header_length} bytes, file of {size})"
            header = json.loads(handle.read(header_length))
    except (OSError, ValueError) as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        return f"{path.name} has no readable safetensors header ({type(exc).__name__})"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_length + max(ends, default=0)
    if size != expected:
        return f"{path.name} is truncated ({size} of {expected} bytes)"
    return None


def _zip_problem(path: Path) -> str | None:
    """Why the torch.save file `path` (a zip archive) is unreadable, or None; reads only its directory."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"{path.name} is truncated or unreadable ({type(exc).__name__})"
    return None


def checkpoint_problem(checkpoint: str | Path, require_optimizer: bool = True) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None if it is complete.

    The Trainer writes a checkpoint as: weights (+ config), then optimizer.pt, scheduler.pt and
    rng_state*.pth (unless `save_only_model`), and trainer_state.json last. A crash in between leaves
    a folder the Trainer refuses ("Can't find a valid checkpoint") or fails to read (SafetensorError).
    Checked: trainer_state.json parses, every weights file has a readable header and its full size,
    and the optimizer, scheduler and RNG files exist and are complete zip archives. FSDP/DeepSpeed
    folders (`pytorch_model_fsdp*`, `optimizer_*`, `global_step*`) count as present, unchecked.
    """
    directory = Path(checkpoint)
    if not directory.is_dir():
        return "it does not exist" if not directory.exists() else "it is not a directory"
    try:
        names = {path.name: path for path in directory.iterdir()}
    except OSError as exc:
        return f"unreadable ({type(exc).__name__})"
    sharded = any(name.startswith(("pytorch_model_fsdp", "global_step")) for name in names)
    if "trainer_state.json" not in names:
        return "no trainer_state.json (the save was cut short)"
    try:
        json.loads(names["trainer_state.json"].read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"trainer_state.json is unreadable ({type(exc).__name__})"
    if "model.safetensors.index.json" in names:
        try:
            index = json.loads(names["model.safetensors.index.json"].read_text(encoding="utf-8"))
            weights = [directory / name for name in sorted(set(index["weight_map"].values()))]
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            return f"model.safetensors.index.json is unreadable ({type(exc).__name__})"
    elif "model.safetensors" in names:
        weights = [names["model.safetensors"]]
    elif "pytorch_model.bin" in names:
        weights = [names["pytorch_model.bin"]]
    elif sharded:
        weights = []
    else:
        return "no model weights (model.safetensors)"
    for path in weights:
        if not path.is_file():
            return f"no {path.name}"
        problem = _safetensors_problem(path) if path.suffix == ".safetensors" else _zip_problem(path)
        if problem:
            return problem
    if not require_optimizer:
        return None
    optimizer = [path for name, path in names.items() if re.fullmatch(r"(rank\d+-of-\d+-)?optimizer\.(pt|bin)", name)]
    if not optimizer and not sharded and not any(name.startswith("optimizer_") for name in names):
        return "no optimizer.pt"
    if "scheduler.pt" not in names:
        return "no scheduler.pt"
    rng = [path for name, path in names.items() if re.fullmatch(r"rng_state(_\d+)?\.pth", name)]
    if not rng:
        return "no rng_state.pth"
    for path in [*optimizer, names["scheduler.pt"], *rng]:
        if path.is_file() and (problem := _zip_problem(path)):
            return problem
    return None


def _set_aside(checkpoint: Path) -> Path:
    target = checkpoint.with_name(INCOMPLETE_PREFIX + checkpoint.name)
    number = 1
    while target.exists():
        number += 1
        target = checkpoint.with_name(f"{INCOMPLETE_PREFIX}{checkpoint.name}.{number}")
    checkpoint.rename(target)
    return target


def resolve_checkpoint(config: TrainConfig) -> str | None:
    """The checkpoint to resume from, or None (see `TrainConfig.resume_from_checkpoint`).

    "auto": the newest complete `checkpoint-<step>` in `output_dir`. Newer incomplete ones (a crash
    while saving) are logged with the reason and renamed `incomplete-checkpoint-<step>` (by process 0);
    with no complete checkpoint the run starts from `config.model`, saying so.

    Raises:
        ValueError: an explicit `resume_from_checkpoint` path that is missing or incomplete.
    """
    value = config.resume_from_checkpoint
    if value is None:
        return None
    require_optimizer = not config.extra_training_args.get("save_only_model", False)
    if value != "auto":
        problem = checkpoint_problem(value, require_optimizer)
        if problem:
            raise ValueError(
                f"resume_from_checkpoint={value!r} cannot be resumed from: {problem}; pass a complete "
                "checkpoint-<step> directory, 'auto' (the newest complete one) or null (start fresh)"
            )
        return str(value)
    checkpoint = newest_complete_checkpoint(config.output_dir, require_optimizer)
    if checkpoint:
        logger.info("Resuming from %s (resume_from_checkpoint='auto')", checkpoint)
    return checkpoint


def newest_complete_checkpoint(output_dir: str | Path, require_optimizer: bool = True) -> str | None:
    """The newest `checkpoint-<step>` in `output_dir` that `checkpoint_problem` finds complete, or None.

    Newer incomplete ones are logged with the reason and renamed `incomplete-checkpoint-<step>` by
    process 0; if every checkpoint is incomplete, a warning says the run starts afresh.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := _CHECKPOINT_NAME.match(path.name)) and path.is_dir()
    )
    skipped = []
    main_process = int(os.environ.get("RANK", "0")) == 0
    for _, path in reversed(found):
        problem = checkpoint_problem(path, require_optimizer)
        if problem is None:
            return str(path)
        skipped.append(f"{path.name}: {problem}")
        if main_process:
            logger.warning("Skipping incomplete checkpoint %s: %s; renamed it %s", path, problem, _set_aside(path).name)
    if skipped:
        logger.warning(
            "No complete checkpoint in %s (skipped %s): training starts afresh", output_dir, "; ".join(skipped)
        )
    return None


def build_trainer(
    config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()
) -> tuple[Seq2SeqTrainer, dict[str, Any]]:
    """Load model, tokenizer and data for `config` and return the trainer and a run summary
    (data loading and tokenization statistics, parameter counts) for `metrics.json`."""
    from mega2bart.builder import load_mega2bart
    from mega2bart.builder.generation import generation_lengths, new_token_limits
    from mega2bart.data import SummarizationCollator, load_summarization_dataset, require_rows, tokenize_dataset
    from mega2bart.metrics import SENTENCE_SPLITTER, build_compute_metrics

    args = config.to_training_arguments()  # first: it validates the environment (reporters, devices)
    # Mega2BartModel: its loss is normalised by the accumulated batch's label tokens (num_items_in_batch)
    model, tokenizer = load_mega2bart(config.model)
    tokenizer.padding_side = "right"
    counts = apply_freeze(model, config.freeze)
    logger.info("freeze=%r: %d trainable parameters, %d frozen", config.freeze, counts["trainable"], counts["frozen"])

    if config.streaming:
        tokenized, token_stats, data_stats = _streamed_splits(config, tokenizer)
    else:
        raw, load_stats = load_summarization_dataset(
            config.dataset,
            config.dataset_config,
            text_column=config.text_column,
            summary_column=config.summary_column,
        )
        needed = [config.train_split] + ([config.eval_split] if config.eval_split else [])
        for split in needed:
            if split not in raw:
                raise ValueError(f"dataset {config.dataset!r} has no split {split!r}; its splits are {sorted(raw)}")
            require_rows(raw, split, load_stats, config.dataset)
        train_raw = raw[config.train_split]
        if config.max_train_samples:
            train_raw = train_raw.select(range(min(config.max_train_samples, len(train_raw))))
        splits = {"train": train_raw}
        if config.eval_split:
            eval_raw = raw[config.eval_split]
            if config.max_eval_samples:
                eval_raw = eval_raw.select(range(min(config.max_eval_samples, len(eval_raw))))
            splits["eval"] = eval_raw
        from datasets import DatasetDict

        tokenized, token_stats = tokenize_dataset(
            DatasetDict(splits), tokenizer, config.max_source_length, config.max_target_length
        )
        data_stats = load_stats.to_dict()

    # 8 for the GPU's matrix units; a MEGA encoder pads to a multiple of its chunk_size itself (MegaModel)
    pad_multiple = config.pad_to_multiple_of or 8
    collator = SummarizationCollator(tokenizer, model=model, pad_to_multiple_of=pad_multiple)

    callbacks = list(callbacks)
    if config.warm_start_steps:
        callbacks.append(WarmStartCallback(model, config.warm_start_steps))
    if config.stop_at_loss is not None:
        callbacks.append(StopAtLossCallback(config.stop_at_loss, config.stop_at_loss_logs))
    # lengths in the form the model's defaults are saved in (max_length/min_length), so they replace them
    min_new = new_token_limits(model.generation_config)[1]
    shortest = config.generation_max_new_tokens if min_new and min_new > config.generation_max_new_tokens else None
    eval_generation = {
        **generation_lengths(config.generation_max_new_tokens, shortest),  # the model's minimum may exceed it
        "num_beams": config.generation_num_beams,
    }
    trainer = SummarizationTrainer(
        eval_generation=eval_generation,
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["eval"] if config.eval_split else None,
        data_collator=collator,
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(tokenizer) if config.eval_split else None,
        callbacks=callbacks,
    )
    if not getattr(type(model), "accepts_loss_kwargs", False):
        # A model whose forward takes **kwargs but ignores num_items_in_batch would otherwise get an
        # undivided per-micro-batch mean: the Trainer must divide by the accumulation steps itself.
        trainer.model_accepts_loss_kwargs = False
    summary = {
        "data": data_stats,
        "tokenization": {name: stats.to_dict() for name, stats in token_stats.items()},
        "parameters": counts,
        "pad_to_multiple_of": pad_multiple,
        "bf16": args.bf16,
        "world_size": args.world_size,
        "rouge_sentence_splitter": SENTENCE_SPLITTER if config.eval_split else None,
    }
    return trainer, summary


STREAM_SHUFFLE_BUFFER = 1000


def _streamed_splits(config: TrainConfig, tokenizer: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """`config.streaming`: the train split as a shuffled, lazily tokenized stream; the eval split's
    first `max_eval_samples` rows read from a stream into memory (generation needs a sized set)."""
    from datasets import Dataset

    from mega2bart.data import load_summarization_stream, tokenize_dataset

    def stream(split: str) -> Any:
        return load_summarization_stream(
            config.dataset,
            config.dataset_config,
            split=split,
            text_column=config.text_column,
            summary_column=config.summary_column,
        )

    train = stream(config.train_split)
    if config.max_train_samples:
        train = train.take(config.max_train_samples)
    # the Trainer calls set_epoch, so each pass over the stream is shuffled anew
    train = train.shuffle(seed=config.seed, buffer_size=STREAM_SHUFFLE_BUFFER)
    tokenized = {"train": tokenize_dataset(train, tokenizer, config.max_source_length, config.max_target_length)[0]}
    token_stats = {}
    if config.eval_split:
        rows = list(stream(config.eval_split).take(config.max_eval_samples))
        if not rows:
            raise ValueError(f"the eval split {config.eval_split!r} of {config.dataset!r} has no usable row")
        eval_set = Dataset.from_list(rows, split=config.eval_split)
        tokenized["eval"], stats = tokenize_dataset(
            eval_set, tokenizer, config.max_source_length, config.max_target_length
        )
        token_stats = {"eval": next(iter(stats.values()))}
    if config.train_sampling_strategy == "group_by_length":
        logger.info("streaming: the training rows come in stream order (shuffled in a buffer), not grouped by length")
    return tokenized, token_stats, {"source": config.dataset, "streaming": True, "train_split": config.train_split}


class ShipBuildFilesCallback(TrainerCallback):
    """After each checkpoint save: the remote code and provenance of the input model go in too."""

    def __init__(self, source: str) -> None:
        self.source = source

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        from mega2bart.builder import ship_build_files

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and (checkpoint / "config.json").is_file():
            ship_build_files(checkpoint, self.source, training={"from": self.source, "global_step": state.global_step})


def _same_model(first: str, second: str) -> bool:
    paths = Path(first).expanduser(), Path(second).expanduser()
    if all(path.exists() for path in paths):
        return paths[0].resolve() == paths[1].resolve()
    return first == second


def prepare_output_dir(config: TrainConfig, overwrite: bool = False) -> None:
    """Refuse an `output_dir` that is a file or holds a run of another model; `overwrite` deletes a
    previous run's checkpoints, config, metrics and final weights (not other files) to start afresh.

    A previous run is recognised by its `train_config.yaml`. Resuming it with another `model` would
    silently continue the old weights (the checkpoints) under the new name.
    """
    output_dir = Path(config.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {str(output_dir)!r} is a file: pass a directory path (--output-dir)")
    saved = output_dir / CONFIG_FILE
    if not saved.is_file():
        return
    if overwrite:
        if int(os.environ.get("RANK", "0")) == 0:
            _delete_run(output_dir)
        return
    try:
        previous = read_yaml_mapping(saved, "TrainConfig").get("model")
    except ValueError as exc:
        raise ValueError(f"{exc}; fix or delete it, or pass --overwrite to start that run over") from None
    if previous and not _same_model(str(previous), config.model):
        raise ValueError(
            f"output_dir {str(output_dir)!r} holds a run of model {str(previous)!r}, not {config.model!r}: pass "
            "another --output-dir, or --overwrite to delete that run's checkpoints and start afresh"
        )


def _delete_run(output_dir: Path) -> None:
    """Delete what a run wrote in `output_dir`: checkpoints, its config and metrics, the final model's
    weights, configs and remote code. Other files stay (the tokenizer files are rewritten by the next run)."""
    import shutil

    from mega2bart.builder import BUILD_INFO_FILE, REMOTE_CODE_FILES

    names = {
        CONFIG_FILE,
        METRICS_FILE,
        "config.json",
        "generation_config.json",
        "training_args.bin",
        "model.safetensors",
        "model.safetensors.index.json",
        BUILD_INFO_FILE,
        *REMOTE_CODE_FILES,
    }
    deleted = 0
    for path in output_dir.iterdir():
        run_folder = path.is_dir() and (
            _CHECKPOINT_NAME.match(path.name) or path.name.startswith(INCOMPLETE_PREFIX + "checkpoint-")
        )
        if run_folder:
            shutil.rmtree(path)
        elif path.is_file() and (path.name in names or re.fullmatch(r"model-\d+-of-\d+\.safetensors", path.name)):
            path.unlink()
        else:
            continue
        deleted += 1
    logger.warning("overwrite: deleted %d checkpoints and files of the previous run in %s", deleted, output_dir)


def train(
    config: TrainConfig, callbacks: Sequence[TrainerCallback] = (), overwrite: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """Run `config`: train (resuming if asked), save the final model and tokenizer in
    `output_dir`, evaluate on the eval split, and write `train_config.yaml` and `metrics.json`.

    The final model and every checkpoint also get the MEGA remote code and the input model's
    provenance (`mega2bart_build.json`), so they load with `trust_remote_code=True` alone.
    `overwrite=True` deletes a previous run in `output_dir` first (see `prepare_output_dir`); `quiet=True`
    leaves out the Trainer's printed logs and progress bar (the CLI's --quiet).

    Returns the content of `metrics.json`: {"train": ..., "eval": ..., "run": ...}.
    """
    from mega2bart.builder import ship_build_files

    prepare_output_dir(config, overwrite)
    checkpoint = resolve_checkpoint(config)
    trainer, summary = build_trainer(config, [*callbacks, ShipBuildFilesCallback(config.model)])
    if quiet:  # the Trainer prints its logs (the final metrics dict included) through these
        for printer in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(printer)
    output_dir = Path(config.output_dir)
    if trainer.is_world_process_zero():
        config.save(output_dir)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(output_dir))  # model + tokenizer (processing_class), process 0 only
    if trainer.is_world_process_zero():
        ship_build_files(
            output_dir,
            config.model,
            training={
                "from": config.model,
                "global_step": train_output.global_step,
                "dataset": config.dataset,
            },
        )
    results: dict[str, Any] = {
        "train": dict(train_output.metrics),
        "run": {**summary, "resumed_from": checkpoint, "global_step": train_output.global_step},
    }
    stops = [c for c in trainer.callback_handler.callbacks if isinstance(c, StopAtLossCallback)]
    if stops:
        results["run"]["stopped_at_loss_step"] = stops[0].stopped_at  # None: it ran all max_steps
    if config.eval_split:
        # an evaluation at the final step (eval_steps dividing max_steps, or epoch end) is not repeated
        final = [
            e for e in trainer.state.log_history if "eval_loss" in e and e.get("step") == trainer.state.global_step
        ]
        results["eval"] = {k: v for k, v in final[-1].items() if k != "step"} if final else trainer.evaluate()
    results["log_history"] = trainer.state.log_history
    if trainer.is_world_process_zero():
        (output_dir / METRICS_FILE).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        logger.info("Wrote %s and %s in %s", CONFIG_FILE, METRICS_FILE, output_dir)
    return results


__all__ = [
    "CONFIG_FILE",
    "EpochSeededLengthGroupedSampler",
    "METRICS_FILE",
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
    "prepare_output_dir",
    "resolve_checkpoint",
    "train",
]
