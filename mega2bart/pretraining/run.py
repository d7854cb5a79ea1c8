"""`run_pretraining`: every phase of a `PretrainConfig` on the same weights, each saved, then `<output_dir>/final`."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mega2bart.config_types import refuse_file_output_dir, refuse_output_over_model

from .config import CONFIG_FILE, FINAL_DIR, METRICS_FILE, PHASE_FILE, Phase, PretrainConfig
from .model import check_compatible, load_mlm_model, load_pretrain_tokenizer
from .text import PackedStream, load_documents, pack_documents

if TYPE_CHECKING:
    from mega2bart.models.mega import MegaForMaskedLM

logger = logging.getLogger(__name__)


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
    check_compatible(model, tokenizer, phases)
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
