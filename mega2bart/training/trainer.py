"""The run's `Seq2SeqTrainer` (evaluation lengths, a resumable group_by_length order) and its callbacks."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Seq2SeqTrainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from mega2bart.models.mega.modeling_mega import refuse_nonfinite_weights

logger = logging.getLogger(__name__)


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

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Every save of the run (checkpoints, the final model) refuses NaN/inf weights first, naming them."""
        if self.args.should_save:
            weights = self.model.state_dict() if state_dict is None else state_dict
            refuse_nonfinite_weights(weights, output_dir or self.args.output_dir)
        super()._save(output_dir, state_dict)

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


class ShipBuildFilesCallback(TrainerCallback):
    """After each checkpoint save: the remote code and provenance of the input model go in too."""

    def __init__(self, source: str) -> None:
        self.source = source

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        from mega2bart.builder import ship_build_files

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and (checkpoint / "config.json").is_file():
            ship_build_files(checkpoint, self.source, training={"from": self.source, "global_step": state.global_step})
