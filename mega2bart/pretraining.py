"""Continued masked-language-model pretraining of a MEGA encoder on raw text.

One `PretrainConfig` -> `run_pretraining(config)` -> `<output_dir>/final`, a `MegaForMaskedLM`
plus tokenizer that `MegaModel.from_pretrained` and `mega2bart build --encoder` accept.

- Text: local .txt/.md/.html files (one document each), .jsonl files (one document per line, field
  `text_column`), directories of those (all read by `mega2bart.documents`), a Hugging Face
  `datasets` name, or the built-ins "aclsum" (full paper texts, offline, `pip install
  aclsum==0.1.2`) and "gensim-wiki" (the shortened English Wikipedia dump shipped in the gensim
  4.4.0 wheel).
- Packing: documents are tokenized once, joined with `</s>` into one stream and cut into
  sequences `<s>` + (max_length - 1) tokens, so no position is padding. The tail shorter than
  a sequence is dropped.
- Streaming (`streaming=True`, for corpora that do not fit on disk): the dataset is opened with
  `datasets` streaming and the text files are read one at a time; documents are tokenized and
  packed as they are read (`PackedStream`, the same sequences in the same order), and each
  phase's step count ends it (the stream starts again if it runs out first).
- Reading and packing the text: `mega2bart.pretraining_text`.
- Masking: `DataCollatorForLanguageModeling` with `mlm_probability = mask_ratio` (default 0.4,
  the "should you mask 15%?" finding for long-context MLM; 80/10/10 replacement).
- Phases: `phases="2048:0.4,4096:0.3"` (length:mask_ratio[:steps]) run one after the other on the
  same weights (a fresh optimiser per phase); steps not given split `max_steps` evenly. Each phase
  writes `<output_dir>/phase<i>-len<L>/` (Trainer checkpoints, `model/`, `phase.json`).
- Resume (`resume=True`): finished phases (with `phase.json`) are skipped, the current one resumes
  from its newest complete `checkpoint-*` (weights, optimiser, scheduler, data position). The MLM masks
  after the resume are not those an uninterrupted run would draw: close, not bit-identical.
- `metrics.json` records per phase the train loss and the MLM loss of a fixed masked batch of
  training sequences before and after the phase (a sanity check, not a held-out evaluation).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mega2bart.config_types import RunConfig, refuse_file_output_dir, setting

# the text (reading, packing) lives in its own module; its public names stay importable from here
from mega2bart.pretraining_text import (  # noqa: F401
    BUILTIN_DATASETS,
    GENSIM_WIKI_FILE,
    PackedStream,
    iter_documents,
    load_documents,
    pack_documents,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainingArguments

    from mega2bart.models.mega import MegaForMaskedLM

logger = logging.getLogger(__name__)

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
        help="Local .txt/.md/.html (one document per file) or .jsonl files (one per line), or directories of them.",
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


# ----------------------------------------------------------------------------------------------
# model and tokenizer


def load_mlm_model(spec: str) -> MegaForMaskedLM:
    """A MEGA MLM model from a checkpoint (MegaForMaskedLM or MegaModel) or the "tiny" preset config."""
    from transformers import AutoConfig

    import mega2bart  # noqa: F401  (registers model_type "mega")
    from mega2bart.models.mega import MegaConfig, MegaForMaskedLM

    if spec == TINY_ENCODER and not Path(spec).exists():
        from mega2bart.builder.loading import choose_long_reach
        from mega2bart.presets import TINY_ENCODER as TINY_ENCODER_CONFIG

        logger.info("encoder 'tiny': random-init MEGA with the tiny preset config")
        config = MegaConfig(**TINY_ENCODER_CONFIG)
        choose_long_reach(config, "encoder 'tiny'")
        return MegaForMaskedLM(config)
    path = Path(spec).expanduser()
    if (spec.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").is_file():
        raise FileNotFoundError(f"encoder {spec!r} is not a model directory (no config.json): pass a MEGA checkpoint")
    from mega2bart.builder.integrity import check_model_files

    check_model_files(path, "encoder")
    try:
        config = AutoConfig.from_pretrained(spec)
    except OSError as exc:
        raise ValueError(f"could not load the encoder config from {spec!r}: {exc}") from exc
    if config.model_type != "mega":
        hint = (
            " (a built mega2bart model: pass the MEGA encoder it was built from)"
            if config.model_type == "encoder-decoder"
            else ""
        )
        raise ValueError(f"encoder {spec!r} is a {config.model_type!r} model, not MEGA{hint}")
    config.is_decoder = False
    model, info = MegaForMaskedLM.from_pretrained(spec, config=config, output_loading_info=True)
    if info["missing_keys"]:
        logger.info("encoder %s: not in the checkpoint, newly initialised: %s", spec, sorted(info["missing_keys"]))
    return model


def load_pretrain_tokenizer(config: PretrainConfig) -> PreTrainedTokenizerBase:
    spec = config.tokenizer
    longest = max(phase.max_length for phase in config.resolved_phases())
    if spec == "offline" or (spec is None and config.encoder == TINY_ENCODER and not Path(TINY_ENCODER).exists()):
        from mega2bart.tokenization import load_offline_tokenizer

        return load_offline_tokenizer(model_max_length=max(longest, 16384))
    from transformers import AutoTokenizer

    name = spec or config.encoder
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"no tokenizer could be loaded from {name!r} ({type(exc).__name__}): pass tokenizer='offline' "
            "(BART layout, offline) or a tokenizer directory / Hub id"
        ) from exc
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {name!r} has no mask token; MLM needs one (e.g. '<mask>')")
    return tokenizer


def _check_compatible(model: MegaForMaskedLM, tokenizer: PreTrainedTokenizerBase, phases: list[Phase]) -> None:
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the encoder's vocab_size is {vocab}: use the encoder's "
            "own tokenizer (or one with at most vocab_size tokens)"
        )
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs bos and eos tokens (<s>, </s>) to pack documents")
    chunk = model.config.chunk_size if model.config.use_chunking else None
    for phase in phases:
        if chunk and phase.max_length > chunk and phase.max_length % chunk:
            logger.warning(
                "max_length %d is not a multiple of chunk_size %d: every sequence is padded inside the model to %d",
                phase.max_length,
                chunk,
                math.ceil(phase.max_length / chunk) * chunk,
            )


# ----------------------------------------------------------------------------------------------
# the run


def _mlm_loss(model: MegaForMaskedLM, batch: dict[str, Any]) -> float:
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        inputs = {key: value.to(model.device) for key, value in batch.items()}
        loss = float(model(**inputs).loss)
    model.train(was_training)
    return loss


def _checkpointing_args(arguments_class: type, enabled: bool) -> dict[str, Any]:
    """Per-block recomputation; transformers >= 5.x renamed `gradient_checkpointing` `activation_checkpointing`."""
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in arguments_class.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return {name: enabled, f"{name}_kwargs": {"use_reentrant": False} if enabled else None}


def _phase_dir(output_dir: Path, index: int, phase: Phase) -> Path:
    return output_dir / f"phase{index + 1}-len{phase.max_length}"


def run_pretraining(config: PretrainConfig) -> Path:
    """Run every phase of `config` and save `<output_dir>/final`; returns that directory.

    Raises:
        ValueError: a non-empty `output_dir` without `resume`, bad text or tokenizer/encoder mismatch.
        FileNotFoundError: a missing text file or encoder directory.
    """
    import datasets
    from transformers import DataCollatorForLanguageModeling, Trainer, set_seed

    from mega2bart.training import newest_complete_checkpoint

    output_dir = Path(config.output_dir).expanduser()
    refuse_file_output_dir(output_dir)
    # a run that failed before training (bad text, too little of it) left at most its config: not a run to protect
    started = output_dir.is_dir() and any(path.name != CONFIG_FILE for path in output_dir.iterdir())
    if started and not config.resume:
        raise ValueError(
            f"output_dir {str(output_dir)!r} is not empty: pass resume=True (--resume) to continue that run, "
            "or choose another output_dir"
        )
    phases = config.resolved_phases()
    set_seed(config.seed)
    model = load_mlm_model(config.encoder)  # cheap checks first: a bad encoder fails before reading text
    tokenizer = load_pretrain_tokenizer(config)
    _check_compatible(model, tokenizer, phases)
    if config.streaming:
        token_docs: list[list[int]] = []
        for phase in phases:  # too little text fails here, before the run writes anything
            if next(iter(PackedStream(config, tokenizer, phase.max_length)), None) is None:
                raise ValueError(
                    f"the text stream holds fewer tokens than one packed sequence of max_length {phase.max_length}: "
                    "add text or lower max_length"
                )
    else:
        documents = load_documents(config)
        token_docs = tokenizer(documents, add_special_tokens=False, verbose=False)["input_ids"]
        logger.info("tokenized %d documents into %d tokens", len(token_docs), sum(map(len, token_docs)))
        for phase in phases:  # too little text fails here, before the run writes anything
            pack_documents(token_docs, phase.max_length, tokenizer.bos_token_id, tokenizer.eos_token_id)
    config.save(output_dir)

    results: list[dict[str, Any]] = []
    for index, phase in enumerate(phases):
        phase_dir = _phase_dir(output_dir, index, phase)
        if config.resume and (phase_dir / PHASE_FILE).is_file():
            logger.info("phase %d already finished (%s): loading its weights", index + 1, phase_dir)
            model = type(model).from_pretrained(phase_dir / "model")
            results.append(json.loads((phase_dir / PHASE_FILE).read_text()))
            continue
        if config.streaming:
            train_set = PackedStream(config, tokenizer, phase.max_length)  # read again by the Trainer
            head = [row["input_ids"] for row in itertools.islice(train_set, 4)]
            count: int | None = None  # unknown: the stream is not read to its end
        else:
            sequences = pack_documents(token_docs, phase.max_length, tokenizer.bos_token_id, tokenizer.eos_token_id)
            train_set = datasets.Dataset.from_dict({"input_ids": sequences})
            head, count = sequences[:4], len(sequences)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=phase.mask_ratio)
        probe = DataCollatorForLanguageModeling(tokenizer, mlm_probability=phase.mask_ratio, seed=config.seed)(
            [{"input_ids": ids} for ids in head]
        )
        loss_before = _mlm_loss(model, probe)
        args = config.to_training_arguments(phase_dir, phase.steps)
        trainer = Trainer(
            model=model, args=args, train_dataset=train_set, data_collator=collator, processing_class=tokenizer
        )
        last = newest_complete_checkpoint(phase_dir) if config.resume else None  # skips one cut short by a crash
        if last:
            logger.info("phase %d: resuming from %s", index + 1, last)
        logger.info(
            "phase %d/%d: %s sequences of %d tokens, mask ratio %.2f, %d steps",
            index + 1,
            len(phases),
            "streamed" if count is None else count,
            phase.max_length,
            phase.mask_ratio,
            phase.steps,
        )
        train_output = trainer.train(resume_from_checkpoint=last)
        model = trainer.model
        model.save_pretrained(phase_dir / "model")
        result = {
            "phase": index + 1,
            **dataclasses.asdict(phase),
            "sequences": count,  # None when streamed
            "train_loss": train_output.training_loss,
            "mlm_loss_before": loss_before,
            "mlm_loss_after": _mlm_loss(model, probe),
            "resumed_from": last,
        }
        (phase_dir / PHASE_FILE).write_text(json.dumps(result, indent=2))
        results.append(result)
        logger.info(
            "phase %d: MLM loss on the probe batch %.4f -> %.4f", index + 1, loss_before, result["mlm_loss_after"]
        )

    final = output_dir / FINAL_DIR
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    (output_dir / METRICS_FILE).write_text(json.dumps({"phases": results, "final": str(final)}, indent=2))
    logger.info("saved the pretrained encoder to %s", final)
    return final
