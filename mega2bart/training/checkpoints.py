"""The run's folder: which checkpoints are complete, which one to resume from, and starting over."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from mega2bart.config_types import read_yaml_mapping, refuse_file_output_dir, refuse_output_over_model

from .config import CONFIG_FILE, METRICS_FILE, TrainConfig
from .curriculum import CURRICULUM_DIR

logger = logging.getLogger(__name__)

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


def _same_model(first: str, second: str) -> bool:
    paths = Path(first).expanduser(), Path(second).expanduser()
    if all(path.exists() for path in paths):
        return paths[0].resolve() == paths[1].resolve()
    return first == second


def prepare_output_dir(config: TrainConfig, overwrite: bool = False) -> None:
    """Refuse an `output_dir` that is a file, is (holds, lies inside) the model the run reads, or holds a run of
    another model; `overwrite` deletes a previous run's checkpoints, curriculum rungs, config, metrics and final
    weights (not other files) to start afresh.

    A previous run is recognised by its `train_config.yaml`. Resuming it with another `model` would
    silently continue the old weights (the checkpoints) under the new name.
    """
    output_dir = Path(config.output_dir)
    refuse_file_output_dir(output_dir)
    refuse_output_over_model(output_dir, config.model, "model")  # before anything is deleted
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


def _is_run_entry(path: Path, names: set[str]) -> bool:
    """Whether `_delete_run` would delete `path`: a checkpoint folder, or a file the run wrote."""
    return bool(
        _CHECKPOINT_NAME.match(path.name)
        or path.name.startswith(INCOMPLETE_PREFIX + "checkpoint-")
        or path.name == CURRICULUM_DIR
        or path.name in names
        or re.fullmatch(r"model-\d+-of-\d+\.safetensors", path.name)
    )


def _delete_run(output_dir: Path) -> None:
    """Delete what a run wrote in `output_dir`: checkpoints, the curriculum's rungs, its config and metrics, the
    final model's weights, configs and remote code. Other files stay (the tokenizer files are rewritten by the next run)."""
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
    run_links = sorted(str(path) for path in output_dir.iterdir() if path.is_symlink() and _is_run_entry(path, names))
    if run_links:  # rmtree would follow none, but a link's target is not this run's to delete: refuse before any
        raise ValueError(
            f"--overwrite deletes only what a run wrote inside --output-dir, and {run_links[0]!r} is a symbolic link "
            f"(to {os.readlink(run_links[0])!r}): nothing was deleted; remove the link yourself, or choose another "
            "--output-dir"
        )
    deleted = 0
    for path in output_dir.iterdir():
        run_folder = path.is_dir() and (
            _CHECKPOINT_NAME.match(path.name)
            or path.name.startswith(INCOMPLETE_PREFIX + "checkpoint-")
            or path.name == CURRICULUM_DIR  # the rungs of its length curriculum
        )
        if run_folder:
            shutil.rmtree(path)
        elif path.is_file() and (path.name in names or re.fullmatch(r"model-\d+-of-\d+\.safetensors", path.name)):
            path.unlink()
        else:
            continue
        deleted += 1
    logger.warning("overwrite: deleted %d checkpoints and files of the previous run in %s", deleted, output_dir)
