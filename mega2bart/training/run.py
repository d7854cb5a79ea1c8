"""`build_trainer` and `train`: one `TrainConfig` -> a trained, saved and evaluated model with its metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Seq2SeqTrainer, TrainerCallback

from .checkpoints import prepare_output_dir, resolve_checkpoint
from .config import CONFIG_FILE, METRICS_FILE, TrainConfig
from .parameters import WarmStartCallback, apply_freeze
from .splits import load_splits
from .trainer import ShipBuildFilesCallback, StopAtLossCallback, SummarizationTrainer

logger = logging.getLogger(__name__)


def build_trainer(
    config: TrainConfig, callbacks: Sequence[TrainerCallback] = ()
) -> tuple[Seq2SeqTrainer, dict[str, Any]]:
    """Load model, tokenizer and data for `config` and return the trainer and a run summary
    (data loading and tokenization statistics, parameter counts) for `metrics.json`."""
    from mega2bart.builder import load_mega2bart
    from mega2bart.builder.fingerprint import note_unrecorded_change
    from mega2bart.builder.generation import generation_lengths, new_token_limits
    from mega2bart.data import SummarizationCollator
    from mega2bart.metrics import SENTENCE_SPLITTER, build_compute_metrics

    args = config.to_training_arguments()  # first: it validates the environment (reporters, devices)
    # Mega2BartModel: its loss is normalised by the accumulated batch's label tokens (num_items_in_batch)
    model, tokenizer = load_mega2bart(config.model)
    # weights changed since their record's last fingerprint by a tool mega2bart did not see: say so in the record
    note_unrecorded_change(getattr(model.config, "mega2bart_build", None), config.model)
    tokenizer.padding_side = "right"
    counts = apply_freeze(model, config.freeze)
    logger.info("freeze=%r: %d trainable parameters, %d frozen", config.freeze, counts["trainable"], counts["frozen"])

    tokenized, token_stats, data_stats = load_splits(config, tokenizer)

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
