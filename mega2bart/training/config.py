"""`TrainConfig`: the settings of a fine-tuning run, their checks and their `Seq2SeqTrainingArguments`."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from transformers import Seq2SeqTrainingArguments

from mega2bart.config_types import RunConfig, setting

from .curriculum import RUNG_KEYS, SPEC, parse_curriculum

CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "metrics.json"
REPORTERS = ("none", "tensorboard", "wandb")
_REPORTER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


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
    curriculum: str | list[dict[str, Any]] | None = setting(
        None,
        flag=True,
        aliases={"none": None, "": None},
        help=f"""A length curriculum before the main run: rungs {SPEC}, separated by commas (e.g.
        "2048:500:0.05:4,4096:300"), each shorter than max_source_length and longer than the one before. Each rung
        trains at its length from the previous rung's weights (fresh optimiser, warm-up then a constant rate) until
        the mean of its logged losses is below STOP_LOSS (default: stop_at_loss) or for MAX_STEPS steps, at BATCH
        documents per micro-batch (default: the run's); the main run then starts from the last rung's weights. The
        YAML file may also give a list of mappings with keys {", ".join(RUNG_KEYS)} (dataset: a rung's own data).
        Rungs save in `output_dir`/curriculum/rung-LENGTH and resume like the main run.""",
    )
    warm_start_steps: int = setting(
        0,
        flag=True,
        min=0,
        note="0: no warm start",
        help="Staged training: the first N steps (of the first curriculum rung, if any) train only the projection "
        "and the cross-attention.",
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
        self.check_seed()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` ({self.label_smoothing}) must be in [0, 1)")
        if self.warmup_steps < 0 or (self.warmup_steps >= 1 and self.warmup_steps != int(self.warmup_steps)):
            raise ValueError(
                f"`warmup_steps` ({self.warmup_steps}) must be a step count (int >= 1) or a fraction in [0, 1)"
            )
        self.curriculum = parse_curriculum(self.curriculum, self.max_source_length)
        if self.curriculum and self.warm_start_steps >= self.curriculum[0]["max_steps"]:
            raise ValueError(
                f"`warm_start_steps` ({self.warm_start_steps}) must be below the first curriculum rung's max_steps "
                f"({self.curriculum[0]['max_steps']}), where the warm start happens, or the full model never trains"
            )
        if not self.curriculum and self.max_steps > 0 and self.warm_start_steps >= self.max_steps:
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
        hints = typing.get_type_hints(Seq2SeqTrainingArguments)
        for name, value in self.extra_training_args.items():
            expected = _wrong_shape(value, hints[name])
            if expected:
                raise ValueError(
                    f"`extra_training_args.{name}` ({value!r}) must be {expected}, as Seq2SeqTrainingArguments.{name} "
                    "is: fix its value"
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


def _wrong_shape(value: Any, annotation: Any) -> str | None:
    """What a `Seq2SeqTrainingArguments` field of type `annotation` takes, when `value` is not of that shape: a
    mapping field (`lr_scheduler_kwargs`) takes a mapping or its JSON text, a numeric one a number; None when
    `value` fits (other fields are left to transformers)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    optional = type(None) in members
    if value is None:
        return None if optional else "given (not null)"
    kinds = {typing.get_origin(member) or member for member in members} - {type(None)}
    if dict in kinds:
        fits = isinstance(value, (dict, str))
        return None if fits else "a mapping (e.g. {num_cycles: 2}) or its JSON text" + (" or null" if optional else "")
    if kinds and kinds <= {int, float, bool}:
        number = isinstance(value, (int, float)) and (isinstance(value, bool) == (kinds == {bool}))
        return None if number else ("true or false" if kinds == {bool} else "a number")
    return None
