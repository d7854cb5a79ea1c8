"""`PretrainConfig`, the settings of continued MLM pretraining, and its phases (`parse_phases`).

The text reading (`text`), the model loading (`model`) and the run (`run`) all read the settings from
here; every name is importable from `mega2bart.pretraining`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mega2bart.config_types import RunConfig, setting

if TYPE_CHECKING:
    from transformers import TrainingArguments

CONFIG_FILE = "pretrain_config.yaml"
METRICS_FILE = "metrics.json"
FINAL_DIR = "final"
PHASE_FILE = "phase.json"
TINY_ENCODER = "tiny"


@dataclass(frozen=True)
class Phase:
    """One stage of pretraining: sequence length, mask ratio and optimiser steps."""

    max_length: int
    mask_ratio: float
    steps: int


def parse_phases(spec: str, max_steps: int) -> list[Phase]:
    """ "2048:0.4,4096:0.3" or "2048:0.4:600,4096:0.3:400" -> phases; missing steps share `max_steps`."""
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if not items:
        raise ValueError(f"`phases` ({spec!r}) is empty: write e.g. '2048:0.4,4096:0.3' (length:mask_ratio[:steps])")
    parsed: list[tuple[int, float, int | None]] = []
    for item in items:
        parts = item.split(":")
        try:
            if len(parts) not in (2, 3):
                raise ValueError
            length, ratio = int(parts[0]), float(parts[1])
            steps = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ValueError(
                f"phase {item!r} in `phases` ({spec!r}) is not length:mask_ratio[:steps], e.g. '2048:0.4' or '4096:0.3:500'"
            ) from None
        _check_length_and_ratio(length, ratio, f"phase {item!r}")
        if steps is not None and steps < 1:
            raise ValueError(f"phase {item!r}: steps ({steps}) must be >= 1")
        parsed.append((length, ratio, steps))
    unassigned = [i for i, (_, _, steps) in enumerate(parsed) if steps is None]
    budget = max_steps - sum(steps for _, _, steps in parsed if steps is not None)
    if unassigned and budget < len(unassigned):
        raise ValueError(
            f"`max_steps` ({max_steps}) leaves {budget} steps for {len(unassigned)} phase(s) without their own step "
            "count: raise max_steps or give every phase its steps (length:mask_ratio:steps)"
        )
    phases = []
    for i, (length, ratio, steps) in enumerate(parsed):
        if steps is None:
            share, extra = divmod(budget, len(unassigned))
            steps = share + (1 if unassigned.index(i) < extra else 0)
        phases.append(Phase(length, ratio, steps))
    return phases


def _check_length_and_ratio(length: int, ratio: float, what: str) -> None:
    if length < 8:
        raise ValueError(f"{what}: max_length ({length}) must be >= 8")
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"{what}: mask ratio ({ratio}) must be in (0, 1); 0.15 is BERT's, 0.4 the default here")


@dataclass
class PretrainConfig(RunConfig):
    """Everything a continued-MLM run needs; the YAML keys are these field names.

    Each field is declared once, with `setting()`: its help is the `mega2bart pretrain` option's
    help (fields with a `flag`; the others are set with `--set KEY=VALUE` or in the YAML file), and
    its `training_arg` says whether it goes to `TrainingArguments` (`to_training_arguments`).
    """

    file_name: ClassVar[str] = CONFIG_FILE

    encoder: str = setting(
        flag=True,
        help="""MEGA checkpoint directory or Hub id (MegaForMaskedLM, or MegaModel: the MLM bias then starts at 0),
        or "tiny" for the random-init tiny preset encoder (offline demos and tests).""",
    )
    output_dir: str = setting(
        "runs/pretrain",
        flag=True,
        training_arg=True,
        help="Phase folders, `final/`, `metrics.json` and `pretrain_config.yaml` go here.",
    )
    dataset: str | None = setting(
        None,
        flag=True,
        help=""""aclsum", "gensim-wiki", a Hugging Face `datasets` name or a local .jsonl/.json/.csv/.parquet file
        (`text_column` of each row); may be combined with `text_files`.""",
    )
    text_files: list[str] = setting(
        default_factory=list,
        flag=True,
        help="Local .txt/.md/.html/.pdf (one document per file) or .jsonl files (one per line), or directories of them.",
    )
    dataset_config: str | None = setting(
        None, help='The `datasets` configuration name (e.g. "20231101.en" for "wikimedia/wikipedia").'
    )
    dataset_split: str = setting("train", help="Split of `dataset` to read (aclsum: train/validation/test).")
    text_column: str = setting("text", help="Text field of .jsonl lines and `datasets` rows.")
    max_documents: int | None = setting(None, flag=True, min=1, help="Read at most this many documents (None: all).")
    streaming: bool = setting(
        False,
        flag=True,
        help="""Read `dataset` as a stream and the text files one by one, packing as they are read, instead of
        loading and tokenizing all text first (the built-ins "aclsum" and "gensim-wiki" are read whole).""",
    )
    tokenizer: str | None = setting(
        None,
        flag=True,
        help="""Tokenizer directory or Hub id, or "offline" (BART layout, not BART ids); None: the encoder's own
        (the offline one for `encoder="tiny"`).""",
    )
    max_length: int = setting(
        2048,
        flag=True,
        help="Tokens per packed sequence (one phase); a multiple of the encoder's chunk_size avoids padding.",
    )
    mask_ratio: float = setting(0.4, flag=True, help="Fraction of tokens selected for the MLM loss (one phase).")
    phases: str | None = setting(
        None,
        flag=True,
        help='Several phases "length:mask_ratio[:steps],...", e.g. "2048:0.4,4096:0.3"; overrides '
        "max_length/mask_ratio.",
    )
    max_steps: int = setting(
        1000,
        flag=True,
        min=1,
        training_arg=True,
        help="Optimiser steps in all (split over phases that do not give their own).",
    )
    per_device_train_batch_size: int = setting(
        1, flag="--batch-size", min=1, training_arg=True, help="Sequences per device per micro-batch."
    )
    gradient_accumulation_steps: int = setting(1, min=1, training_arg=True, help="Micro-batches per optimiser step.")
    learning_rate: float = setting(
        1e-4, flag=True, above=0, training_arg=True, help="Peak AdamW learning rate of every phase."
    )
    weight_decay: float = setting(0.01, min=0, note="0: no weight decay", training_arg=True, help="AdamW weight decay.")
    warmup_steps: int = setting(0, min=0, training_arg=True, help="Linear warm-up steps at the start of every phase.")
    lr_scheduler_type: str = setting(
        "linear",
        training_arg=True,
        help='Learning-rate schedule after warm-up ("linear", "cosine", "constant_with_warmup", ...).',
    )
    gradient_checkpointing: bool = setting(
        True,
        flag=True,
        training_arg=False,  # to_training_arguments names it as the installed transformers does
        help="Recompute each MEGA block in backward: far less memory at long lengths, ~30% slower.",
    )
    bf16: bool = setting(
        False,
        flag=True,
        training_arg=True,
        help="bf16 mixed precision (autocast; weights stay float32, the EMA kernel is built in float32).",
    )
    save_steps: int = setting(
        500, flag=True, min=1, training_arg=True, help="Save a Trainer checkpoint every N optimiser steps."
    )
    save_total_limit: int | None = setting(
        2, min=1, training_arg=True, help="Keep at most this many checkpoints per phase (None: all)."
    )
    logging_steps: int = setting(10, min=1, training_arg=True, help="Log the training loss every N steps.")
    resume: bool = setting(
        False,
        flag=True,
        help="Continue an interrupted run in `output_dir`; without it a non-empty `output_dir` is an error.",
    )
    seed: int = setting(42, flag=True, training_arg=True, help="Seed for initialisation, data order and masking.")

    def __post_init__(self) -> None:
        super().__post_init__()  # types and ranges of single fields: "1e-4" -> 1e-4, one path -> [path]
        if not self.encoder:
            raise ValueError("`encoder` is empty: pass a MEGA checkpoint directory or Hub id, or 'tiny'")
        if not self.dataset and not self.text_files:
            raise ValueError(
                "no text to pretrain on: pass `dataset` ('aclsum', 'gensim-wiki' or a datasets name) and/or `text_files`"
            )
        _check_length_and_ratio(self.max_length, self.mask_ratio, "`max_length`/`mask_ratio`")
        self.check_seed()
        if self.phases:
            parse_phases(self.phases, self.max_steps)  # raises on a bad spec

    def resolved_phases(self) -> list[Phase]:
        if self.phases:
            return parse_phases(self.phases, self.max_steps)
        return [Phase(self.max_length, self.mask_ratio, self.max_steps)]

    def to_training_arguments(self, phase_dir: str | Path, steps: int) -> TrainingArguments:
        """The `TrainingArguments` of one phase: the fields whose `training_arg` passes them on, the
        phase's folder and steps, and what every phase fixes (step checkpoints, no reporters)."""
        from transformers import TrainingArguments

        return TrainingArguments(
            **{
                **self.training_arguments_kwargs(TrainingArguments),
                "output_dir": str(phase_dir),
                "max_steps": steps,
                **_checkpointing_args(TrainingArguments, self.gradient_checkpointing),
                "save_strategy": "steps",
                "report_to": "none",
                "dataloader_num_workers": 0,
            }
        )


def _checkpointing_args(arguments_class: type, enabled: bool) -> dict[str, Any]:
    """Per-block recomputation; transformers >= 5.x renamed `gradient_checkpointing` `activation_checkpointing`."""
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in arguments_class.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}
