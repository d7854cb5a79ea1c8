"""The length curriculum of a run (`TrainConfig.curriculum`): its rungs, checked; each rung's settings; its record.

A rung trains the model at a shorter input length than the run's, from the previous rung's weights (the first from
`model`), with a fresh optimiser whose rate warms up and then stays constant, until its stop loss or its step cap.
The main run then starts from the last rung's weights. Rung N of LENGTH tokens writes into
`<output_dir>/curriculum/rung-LENGTH/`: checkpoints, the final weights and `rung.json`, the record of its settings
(written when it starts) and of its result (when it ends). A rerun into the same `output_dir` reuses every rung whose
record says it finished with the same settings, resumes an unfinished one from its newest checkpoint, and refuses a
rung whose record holds other settings (its weights belong to another curriculum).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mega2bart.config_types import MAX_INT

if TYPE_CHECKING:
    from .config import TrainConfig

logger = logging.getLogger(__name__)

CURRICULUM_DIR = "curriculum"
RUNG_RECORD = "rung.json"
SPEC = "LENGTH:MAX_STEPS[:STOP_LOSS[:BATCH]]"
EXAMPLE = "2048:500:0.05:4,4096:300"
RUNG_KEYS = ("max_source_length", "max_steps", "stop_at_loss", "batch_size", "dataset")
"""The keys of a rung; stop_at_loss, batch_size and dataset are optional (None: the run's)."""
_SPEC_NAMES = dict(zip(RUNG_KEYS, ("LENGTH", "MAX_STEPS", "STOP_LOSS", "BATCH"), strict=False))
_UNKEYED = {
    # settings that do not change what a rung trains: a rung finished under other values is still the same rung
    "model",  # the run's model; prepare_output_dir refuses another one
    "output_dir",
    "resume_from_checkpoint",
    "curriculum",
    "eval_split",
    "eval_steps",
    "max_eval_samples",
    "per_device_eval_batch_size",
    "eval_accumulation_steps",
    "generation_max_new_tokens",
    "generation_num_beams",
    "save_steps",
    "save_total_limit",
    "report_to",
    "run_name",
    "dataloader_num_workers",
}


# ----------------------------------------------------------------------------- the setting


def parse_curriculum(value: str | list[dict[str, Any]] | None, max_source_length: int) -> list[dict[str, Any]] | None:
    """`TrainConfig.curriculum` as a list of rungs {max_source_length, max_steps, stop_at_loss, batch_size,
    dataset} (None where the run's value applies), or None for no curriculum.

    `value`: "LENGTH:MAX_STEPS[:STOP_LOSS[:BATCH]],..." (the command line; an empty STOP_LOSS keeps the run's), a
    list of mappings with the keys above (the YAML file), "none", "" or None.

    Raises:
        ValueError: one line naming the rung, the value and the form it must take.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str):
        items = [item.strip() for item in value.split(",")]
        if "" in items:
            raise ValueError(
                f"`curriculum` ({value!r}) has an empty rung: separate the rungs ({SPEC}) by single commas, "
                f"e.g. {EXAMPLE!r}"
            )
        rungs = [_spec_rung(item) for item in items]
    else:
        rungs = [_mapping_rung(item, number) for number, item in enumerate(value, start=1)]
    previous: int | None = None
    for rung in rungs:
        length = rung["max_source_length"]
        if length >= max_source_length:
            raise ValueError(
                f"`curriculum` rung of {length} tokens must be shorter than max_source_length ({max_source_length}), "
                "the length the main run trains at after the rungs: drop that rung or raise max_source_length"
            )
        if previous is not None and length <= previous:
            raise ValueError(
                f"`curriculum` rung of {length} tokens comes after one of {previous}: the rungs' lengths must "
                "increase, order them from the shortest"
            )
        previous = length
    return rungs or None


def _spec_rung(item: str) -> dict[str, Any]:
    parts = [part.strip() for part in item.split(":")]
    if not 2 <= len(parts) <= 4:
        raise ValueError(f"`curriculum` rung {item!r} is not {SPEC}: write e.g. {EXAMPLE!r}")
    given = {key: part for key, part in zip(RUNG_KEYS, parts, strict=False) if part != ""}
    return _checked(given, f"rung {item!r}", _SPEC_NAMES, f"write {SPEC}, e.g. {EXAMPLE!r}")


def _mapping_rung(item: Any, number: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"`curriculum` rung {number} ({item!r}) must be a mapping with keys {list(RUNG_KEYS)}")
    unknown = sorted(set(item) - set(RUNG_KEYS))
    if unknown:
        raise ValueError(f"`curriculum` rung {number} has unknown key(s) {unknown}: its keys are {list(RUNG_KEYS)}")
    given = {key: value for key, value in item.items() if value is not None}
    return _checked(given, f"rung {number}", {key: key for key in RUNG_KEYS}, "fix it in the YAML file")


def _checked(given: dict[str, Any], what: str, names: dict[str, str], fix: str) -> dict[str, Any]:
    """The rung of the `given` values, converted and checked; `names`: how the message calls each key."""
    rung: dict[str, Any] = dict.fromkeys(RUNG_KEYS)
    for key in ("max_source_length", "max_steps"):
        if key not in given:
            raise ValueError(f"`curriculum` {what} has no {names[key]}: {fix}")
    for key, value in given.items():
        if key == "dataset":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"`curriculum` {what}: dataset ({value!r}) must be a dataset name or file; {fix}")
            rung[key] = value
            continue
        integer = key != "stop_at_loss"
        number = _number(value, integer)
        if number is None or number <= 0 or number > MAX_INT:
            rule = "a positive whole number" if integer else "a finite number > 0"
            raise ValueError(f"`curriculum` {what}: {names[key]} ({value!r}) must be {rule}; {fix}")
        rung[key] = number
    return rung


def _number(value: Any, integer: bool) -> int | float | None:
    """`value` (a number, or its text) as an int (`integer`) or a finite float; None when it is neither."""
    if isinstance(value, bool):
        return None
    if integer:
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            return int(value) if value.is_integer() else None
        try:
            return int(value) if isinstance(value, str) else None
        except ValueError:
            return None
    try:
        number = float(value) if isinstance(value, (int, float, str)) else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# ----------------------------------------------------------------------------- the rungs of a run


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@dataclasses.dataclass
class Rung:
    """One rung of a run: its number, its `TrainConfig` and what identifies its weights."""

    number: int
    total: int
    config: TrainConfig
    settings: dict[str, Any]
    """The settings that shape what it trains (the rung config less `_UNKEYED`)."""
    after: str
    """The digest of the rung before it (its weights start from that one's), "" for the first."""

    @property
    def directory(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def key(self) -> str:
        return _digest({"settings": self.settings, "after": self.after})

    @property
    def name(self) -> str:
        return f"curriculum rung {self.number}/{self.total} ({self.config.max_source_length:,} tokens)"

    def record(self) -> dict[str, Any] | None:
        """Its `rung.json` (an earlier run started or finished it), or None.

        Raises:
            ValueError: the record is unreadable or holds other settings.
        """
        path = self.directory / RUNG_RECORD
        if not path.is_file():
            return None
        fix = "pass --overwrite to train the run over, or choose another --output-dir"
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            settings, after = record["settings"], record["after"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{self.name}: its record {str(path)!r} is unreadable ({type(exc).__name__}): {fix}"
            ) from None
        if settings != self.settings:
            shared = sorted(set(settings) & set(self.settings))  # a setting both have first, else one missing
            differ = [
                k
                for k in [*shared, *sorted(set(settings) ^ set(self.settings))]
                if settings.get(k) != self.settings.get(k)
            ]
            key = differ[0]
            raise ValueError(
                f"{self.name} in {str(self.directory)!r} was trained with {key}={settings.get(key)!r}, and this run "
                f"asks for {self.settings.get(key)!r}: {fix}"
            )
        if after != self.after:
            raise ValueError(f"{self.name} in {str(self.directory)!r} was trained after other rungs: {fix}")
        return record

    def write_record(self, **result: Any) -> dict[str, Any]:
        """Write `rung.json`: the settings, the digest of the rung before it, and `result`."""
        record = {"settings": self.settings, "after": self.after, **result}
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.directory / (RUNG_RECORD + ".partial")
        partial.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        os.replace(partial, self.directory / RUNG_RECORD)
        return record

    def clear(self) -> None:
        """Delete what an earlier run left in its folder (resume_from_checkpoint None: every rung starts afresh)."""
        if self.directory.is_symlink():
            raise ValueError(
                f"{self.name}: {str(self.directory)!r} is a symbolic link; a rung deletes only its own folder: "
                "remove the link, or choose another --output-dir"
            )
        if self.directory.exists():
            shutil.rmtree(self.directory)
            logger.warning("%s: deleted the folder of an earlier run (resume_from_checkpoint=None)", self.name)


def curriculum_rungs(config: TrainConfig) -> list[Rung]:
    """The rungs of `config`, each with its `TrainConfig`: the run's settings with the rung's length, step cap, stop
    loss, batch size and dataset, no evaluation, a constant rate after warm-up, `warm_start_steps` on the first
    rung only, and resuming from the rung's own checkpoints unless the run starts fresh."""
    rungs: list[Rung] = []
    after = ""
    curriculum = config.curriculum or []
    for number, rung in enumerate(curriculum, start=1):
        length = rung["max_source_length"]
        rung_config = dataclasses.replace(
            config,
            output_dir=str(Path(config.output_dir) / CURRICULUM_DIR / f"rung-{length}"),
            dataset=rung["dataset"] or config.dataset,
            max_source_length=length,
            max_steps=rung["max_steps"],
            stop_at_loss=rung["stop_at_loss"] if rung["stop_at_loss"] is not None else config.stop_at_loss,
            per_device_train_batch_size=rung["batch_size"] or config.per_device_train_batch_size,
            lr_scheduler_type="constant_with_warmup",
            eval_split=None,
            eval_steps=None,
            warm_start_steps=config.warm_start_steps if number == 1 else 0,
            resume_from_checkpoint=None if config.resume_from_checkpoint is None else "auto",
            curriculum=None,
        )
        settings = {k: v for k, v in rung_config.to_dict().items() if k not in _UNKEYED}
        settings = json.loads(json.dumps(settings, default=str))  # as the record reads back
        made = Rung(number, len(curriculum), rung_config, settings, after)
        rungs.append(made)
        after = made.key
    return rungs


def rung_summary(rung: Rung, record: dict[str, Any], reused: bool) -> dict[str, Any]:
    """What metrics.json says of a rung: its settings as run, its result, and whether an earlier run trained it."""
    config = rung.config
    return {
        "max_source_length": config.max_source_length,
        "max_steps": config.max_steps,
        "stop_at_loss": config.stop_at_loss,
        "batch_size": config.per_device_train_batch_size,
        "dataset": config.dataset,
        **{k: v for k, v in record.items() if k not in ("settings", "after", "done")},
        "reused": reused,
        "directory": str(rung.directory),
    }


def rung_lines(rungs: list[dict[str, Any]]) -> str:
    """A line per rung of metrics.json's "curriculum" (`rung_summary`), for the CLI's report."""
    lines = []
    for rung in rungs:
        speed = f", {rung['seconds_per_step']:.3g} s/step" if rung.get("seconds_per_step") else ""
        earlier = " (an earlier run's)" if rung.get("reused") else ""
        lines.append(
            f"curriculum rung {rung['max_source_length']:,} tokens: {rung['steps']} steps, ended at its "
            f"{rung['ended_at']}{speed}{earlier}\n"
        )
    return "".join(lines)


__all__ = [
    "CURRICULUM_DIR",
    "EXAMPLE",
    "RUNG_KEYS",
    "RUNG_RECORD",
    "SPEC",
    "Rung",
    "curriculum_rungs",
    "parse_curriculum",
    "rung_lines",
    "rung_summary",
]
