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
- The settings (`PretrainConfig`, the phases): `mega2bart.pretraining_config`; reading and packing the
  text: `mega2bart.pretraining_text`.
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mega2bart.config_types import refuse_file_output_dir, refuse_output_over_model

# the settings live in their own module; their names stay importable from here
from mega2bart.pretraining_config import (  # noqa: F401
    CONFIG_FILE,
    FINAL_DIR,
    METRICS_FILE,
    PHASE_FILE,
    TINY_ENCODER,
    Phase,
    PretrainConfig,
    parse_phases,
)

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
    from transformers import PreTrainedTokenizerBase

    from mega2bart.models.mega import MegaForMaskedLM

logger = logging.getLogger(__name__)


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
    refuse_output_over_model(output_dir, config.encoder, "encoder")
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
