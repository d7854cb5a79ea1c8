"""`build_trainer` and `train`: one `TrainConfig` -> a trained, saved and evaluated model with its metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PrinterCallback, ProgressCallback, Seq2SeqTrainer, TrainerCallback

from .checkpoints import prepare_output_dir, resolve_checkpoint
from .config import CONFIG_FILE, METRICS_FILE, TrainConfig
from .curriculum import curriculum_rungs, rung_summary
from .parameters import WarmStartCallback, apply_freeze
from .splits import load_splits
from .trainer import ShipBuildFilesCallback, StopAtLossCallback, SummarizationTrainer

if TYPE_CHECKING:
    from transformers.trainer_utils import TrainOutput

logger = logging.getLogger(__name__)


def build_trainer(
    config: TrainConfig, callbacks: Sequence[TrainerCallback] = (), weights: str | None = None
) -> tuple[Seq2SeqTrainer, dict[str, Any]]:
    """Load model, tokenizer and data for `config` and return the trainer and a run summary
    (data loading and tokenization statistics, parameter counts) for `metrics.json`.

    `weights`: a folder to load the model and tokenizer from instead of `config.model` (a curriculum rung's)."""
    from mega2bart.builder import load_mega2bart
    from mega2bart.builder.fingerprint import note_unrecorded_change
    from mega2bart.builder.generation import generation_lengths, new_token_limits
    from mega2bart.data import SummarizationCollator
    from mega2bart.metrics import SENTENCE_SPLITTER, build_compute_metrics

    args = config.to_training_arguments()  # first: it validates the environment (reporters, devices)
    # Mega2BartModel: its loss is normalised by the accumulated batch's label tokens (num_items_in_batch)
    model, tokenizer = load_mega2bart(weights or config.model)
    # weights changed since their record's last fingerprint by a tool mega2bart did not see: say so in the record
    note_unrecorded_change(getattr(model.config, "mega2bart_build", None), weights or config.model)
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


def _fit(
    config: TrainConfig,
    callbacks: Sequence[TrainerCallback],
    quiet: bool,
    checkpoint: str | None,
    weights: str | None,
    training: dict[str, Any],
    save_config: TrainConfig | None = None,
) -> tuple[Seq2SeqTrainer, dict[str, Any], TrainOutput]:
    """Train `config` from `weights` (None: `config.model`) or resume `checkpoint`, then save the model, its
    tokenizer and the input model's remote code and provenance (with `training`) in `output_dir`;
    `save_config` is written there once the trainer is built (the data loaded), before training."""
    from mega2bart.builder import ship_build_files

    trainer, summary = build_trainer(config, [*callbacks, ShipBuildFilesCallback(config.model)], weights=weights)
    if quiet:  # the Trainer prints its logs (the final metrics dict included) through these
        for printer in (PrinterCallback, ProgressCallback):
            trainer.remove_callback(printer)
    if save_config is not None and trainer.is_world_process_zero():
        save_config.save(config.output_dir)
    train_output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(config.output_dir)  # model + tokenizer (processing_class), process 0 only
    if trainer.is_world_process_zero():
        ship_build_files(
            Path(config.output_dir),
            config.model,
            training={"from": config.model, "global_step": train_output.global_step, **training},
        )
    return trainer, summary, train_output


def _stopped_at(trainer: Seq2SeqTrainer) -> tuple[bool, int | None]:
    """(whether the run has a `StopAtLossCallback`, the step it stopped at or None)."""
    stops = [c for c in trainer.callback_handler.callbacks if isinstance(c, StopAtLossCallback)]
    return bool(stops), stops[0].stopped_at if stops else None


def _climb(
    config: TrainConfig, callbacks: Sequence[TrainerCallback], quiet: bool, checkpoint: str | None
) -> tuple[str, list[dict[str, Any]]]:
    """Train the curriculum's rungs in order (`mega2bart.training.curriculum`); returns the last rung's folder (the
    main run's weights) and what metrics.json says of each rung."""
    rungs = curriculum_rungs(config)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if config.resume_from_checkpoint is None:
        if main_process:
            for rung in rungs:
                rung.clear()
        records: list[dict[str, Any] | None] = [None] * len(rungs)
    else:
        records = [rung.record() for rung in rungs]  # refuses a rung trained with other settings, before any training
    unfinished = [rung for rung, record in zip(rungs, records, strict=True) if not (record and record.get("done"))]
    if checkpoint and unfinished:
        raise ValueError(
            f"the main run would resume from {checkpoint!r}, but {unfinished[0].name} has not finished: that "
            "checkpoint did not start from this curriculum; pass --overwrite to train the run over, or --resume none"
        )
    weights, summaries = None, []
    for rung, record in zip(rungs, records, strict=True):
        if record and record.get("done"):
            logger.info(
                "%s: done in an earlier run (%s steps, ended at its %s), reused",
                rung.name,
                record["steps"],
                record["ended_at"],
            )
            summaries.append(rung_summary(rung, record, reused=True))
            weights = str(rung.directory)
            continue
        if main_process:
            rung.write_record(done=False)
        resume = resolve_checkpoint(rung.config)
        stop = f"until the loss is below {rung.config.stop_at_loss:g}" if rung.config.stop_at_loss else "no stop loss"
        logger.info(
            "%s: at most %d steps, %s, batch %d, from %s%s",
            rung.name,
            rung.config.max_steps,
            stop,
            rung.config.per_device_train_batch_size,
            weights or config.model,
            f", resuming {resume}" if resume else "",
        )
        trainer, _, output = _fit(rung.config, callbacks, quiet, resume, weights, {"curriculum_rung": rung.number})
        _, stopped = _stopped_at(trainer)
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        taken = output.global_step - (int(Path(resume).name.rsplit("-", 1)[1]) if resume else 0)
        in_memory = "length" in (getattr(trainer.train_dataset, "column_names", None) or ())  # not streamed
        lengths = trainer.train_dataset["length"] if in_memory else None
        result = {
            "done": True,
            "steps": output.global_step,
            "ended_at": "loss" if stopped is not None else "cap",
            "stopped_at_loss_step": stopped,
            "last_losses": losses[-max(3, rung.config.stop_at_loss_logs) :],
            "seconds_per_step": output.metrics["train_runtime"] / taken if taken else None,
            "longest_input": max(lengths) if lengths else None,
            "resumed_from": resume,
        }
        record = rung.write_record(**result) if main_process else {"settings": rung.settings, **result}
        trainer.accelerator.wait_for_everyone()  # the next rung loads these weights in every process
        logger.info(
            "%s: %d steps, ended at its %s; last losses %s; %s s/step",
            rung.name,
            output.global_step,
            result["ended_at"],
            ", ".join(f"{loss:.4g}" for loss in result["last_losses"]),
            f"{result['seconds_per_step']:.3g}" if taken else "-",
        )
        summaries.append(rung_summary(rung, record, reused=False))
        weights = str(rung.directory)
    assert weights is not None  # a curriculum has rungs (parse_curriculum)
    return weights, summaries


def train(
    config: TrainConfig, callbacks: Sequence[TrainerCallback] = (), overwrite: bool = False, quiet: bool = False
) -> dict[str, Any]:
    """Run `config`: train (resuming if asked), save the final model and tokenizer in
    `output_dir`, evaluate on the eval split, and write `train_config.yaml` and `metrics.json`.

    With a `curriculum`, its rungs train first, each from the one before, and the main run starts from the last
    one's weights (`mega2bart.training.curriculum`); finished rungs of an earlier run are reused.
    The final model and every checkpoint also get the MEGA remote code and the input model's
    provenance (`mega2bart_build.json`), so they load with `trust_remote_code=True` alone.
    `overwrite=True` deletes a previous run in `output_dir` first (see `prepare_output_dir`); `quiet=True`
    leaves out the Trainer's printed logs and progress bar (the CLI's --quiet). `callbacks` go to every rung too.

    Returns the content of `metrics.json`: {"train": ..., "eval": ..., "run": ..., "curriculum": ...}.
    """
    prepare_output_dir(config, overwrite)
    checkpoint = resolve_checkpoint(config)
    output_dir = Path(config.output_dir)
    weights, rungs = None, []
    if config.curriculum:
        if int(os.environ.get("RANK", "0")) == 0:
            config.save(output_dir)  # before the rungs: a run stopped in its curriculum is a run (--overwrite ...)
        weights, rungs = _climb(config, callbacks, quiet, checkpoint)
    main = dataclasses.replace(config, warm_start_steps=0) if rungs else config  # the first rung warmed up
    training = {"dataset": config.dataset, **({"curriculum": [r["max_source_length"] for r in rungs]} if rungs else {})}
    trainer, summary, train_output = _fit(main, callbacks, quiet, checkpoint, weights, training, save_config=config)
    results: dict[str, Any] = {
        "train": dict(train_output.metrics),
        "run": {**summary, "resumed_from": checkpoint, "global_step": train_output.global_step},
    }
    has_stop, stopped = _stopped_at(trainer)
    if has_stop:
        results["run"]["stopped_at_loss_step"] = stopped  # None: it ran all max_steps
    if rungs:
        results["run"]["started_from"] = weights
        results["curriculum"] = rungs
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
