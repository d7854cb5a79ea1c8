"""Save a built model atomically, load it back, and make a Trainer's output as self-contained as a build.

A save writes everything into a hidden staging folder beside the target (`.NAME.partial-*`, with an
owner marker) and renames it into place at the end, so a crash never leaves a directory that looks
complete; `remove_stale_staging` deletes the folders that killed saves left behind.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..modeling_mega2bart import Mega2BartModel
from ..models.mega.modeling_mega import refuse_nonfinite_weights
from . import remote_code
from .checks import check_rows_hold_tokenizer, vocabulary_rows
from .describe import BUILD_INFO_FILE, CONFIG_BUILD_KEY, BuildInfo, ModelDescription, describe_mega2bart
from .errors import BuildError
from .fingerprint import folder_fingerprint, recorded_ties
from .generation import generation_problems
from .integrity import check_model_files
from .modelcard import render_model_card
from .sources import hub_error, resolve_source

logger = logging.getLogger(__name__)

_STAGING_MARKER = ".mega2bart-staging.json"
"""Written first into a staging folder: who owns it (pid, host, time). Deleted before the rename."""
STALE_STAGING_AGE_S = 7 * 24 * 3600
"""A staging folder this old is stale even when its process cannot be checked (another host)."""


def save_mega2bart(
    model: Mega2BartModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    allow_nonfinite: bool = False,
) -> Path:
    """Write weights (safetensors), configs, generation config, tokenizer, MEGA remote code, provenance
    (`mega2bart_build.json`) and a model card (README.md) to `output_dir`, atomically.

    Everything is written to a hidden temporary directory beside `output_dir` and renamed into place
    at the end, so a crash never leaves a directory that looks complete.

    Raises:
        BuildError: `output_dir` exists, is not empty and `overwrite` is False (or it is a file).
        ValueError: a weight holds NaN or inf (`refuse_nonfinite_weights`), unless `allow_nonfinite`.
    """
    if not allow_nonfinite:
        refuse_nonfinite_weights(model.state_dict(), Path(output_dir).expanduser())
    target = write_atomically(output_dir, lambda staging: _write_model_files(model, tokenizer, staging), overwrite)
    logger.info("saved mega2bart model to %s", target)
    return target


def write_atomically(output_dir: str | os.PathLike, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Call `write(folder)` on a hidden staging folder beside `output_dir`, then rename it into place (an existing
    `output_dir` replaced only once the new one is complete). Returns the target path.

    Raises:
        BuildError: `output_dir` exists, is not empty and `overwrite` is False (or it is a file).
    """
    target = _check_target(Path(output_dir).expanduser(), overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        _write_owner_marker(staging)
        write(staging)
        (staging / _STAGING_MARKER).unlink()
        _apply_umask(staging)
        _replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _check_target(target: Path, overwrite: bool) -> Path:
    if target.exists() and not target.is_dir():
        raise BuildError(f"output {str(target)!r} is a file; pass a directory path")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise BuildError(
            f"output directory {str(target)!r} is not empty; pass overwrite=True (CLI: --overwrite) or another path"
        )
    return target


def _write_owner_marker(folder: Path, **extra: str) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "created": time.time(), **extra}
    (folder / _STAGING_MARKER).write_text(json.dumps(owner) + "\n")


def _write_model_files(model: Mega2BartModel, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Weights, configs and tokenizer (transformers), remote code, provenance and the model card."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    remote_code.write_remote_code(directory)
    # the record in the config (written by save_pretrained) is the current one: it holds changes since the build
    in_config = getattr(model.config, CONFIG_BUILD_KEY, None) is not None
    description = describe_mega2bart(
        directory, build_info=None if in_config else getattr(model, "mega2bart_build_info", None)
    )
    (directory / BUILD_INFO_FILE).write_text(description.to_json())
    (directory / "README.md").write_text(render_model_card(description))


def _apply_umask(staging: Path) -> None:
    """mkdtemp makes the folder 0700 and safetensors writes the weights 0600 (through a temporary file):
    give every entry the modes a plain mkdir / open would, under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (staging, *staging.rglob("*")):
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _replace_directory(staging: Path, target: Path) -> None:
    """Move the complete `staging` folder to `target`, an existing `target` first into a `.NAME.old-*` folder
    whose owner marker names `staging`: a save killed between the renames leaves both, and the next save's
    `remove_stale_staging` finishes the move (the new model in place, the old one deleted)."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        _write_owner_marker(trash, staging=staging.name)
        target.rename(trash / "old")  # the old directory disappears only once the new one is complete
        try:
            staging.rename(target)
        except BaseException:
            (trash / "old").rename(target)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        staging.rename(target)


def _process_is_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else, or cannot tell: assume running
    return True


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Delete the `.NAME.partial-*` staging folders that killed saves of `target` left beside it, and finish
    the replacements they left half done (`.NAME.old-*`: the new model put in place, the old one deleted).

    Only folders holding `write_atomically`'s owner marker are touched, and only when their process is
    gone (same host) or they are older than `STALE_STAGING_AGE_S`. Returns the folders removed.
    """
    target = Path(target).expanduser()
    if not target.parent.is_dir():
        return []
    removed = []
    stem = glob.escape(target.name)
    # the old-model folders of killed replacements first: they say which staging folder was about to replace it
    olds = sorted(target.parent.glob(f".{stem}.old-*"))
    for candidate in [*olds, *sorted(target.parent.glob(f".{stem}.partial-*"))]:
        marker = candidate / _STAGING_MARKER
        if candidate.is_symlink() or not candidate.is_dir():  # (or moved by a replacement finished above)
            continue
        try:
            owner = json.loads(marker.read_text())
            pid, host, created = int(owner["pid"]), str(owner["host"]), float(owner["created"])
        except (OSError, ValueError, KeyError, TypeError):
            logger.warning(
                "left alone %s: it has no readable mega2bart owner marker; delete it by hand if stale", candidate
            )
            continue
        same_host = host == socket.gethostname()
        dead = same_host and not _process_is_running(pid)
        if dead or time.time() - created > STALE_STAGING_AGE_S:
            if candidate in olds:
                removed += _finish_replacement(candidate, target, owner.get("staging"))
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
            logger.info(
                "removed stale staging folder %s (pid %d on %s %s)",
                candidate,
                pid,
                host,
                "has exited" if dead else f"started over {STALE_STAGING_AGE_S // 86400} days ago",
            )
    return removed


def _finish_replacement(trash: Path, target: Path, staging_name: str | None) -> list[Path]:
    """A save that replaced `target` was killed after moving the old model into `trash`: put the complete new
    model (its staging folder) in place, or the old one back if the new one is gone. Returns the staging folder
    if it was moved or removed."""
    staging = target.parent / staging_name if staging_name else None
    if not target.exists():
        if staging is not None and staging.is_dir():
            staging.rename(target)
            logger.warning("finished the replacement of %s that a killed save left: the new model is in place", target)
            return []
        if (trash / "old").is_dir():
            (trash / "old").rename(target)
            logger.warning("restored the old model of %s that a killed save had moved aside", target)
    if staging is not None and staging.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        return [staging]
    return []


def ship_build_files(
    target: str | os.PathLike, source: str | os.PathLike | None = None, training: Mapping[str, Any] | None = None
) -> None:
    """Make a directory saved by the Trainer (final model or checkpoint) self-contained like a built one:
    write the MEGA remote code (+ `auto_map` in config.json) and the provenance of `source`, the model it was
    trained from, with `training` (and the fingerprint of the weights it saved) appended to its "training" list.

    The build record is the one the Trainer saved in `target`'s config.json (the loaded model's, with what
    `mega2bart train` found when it loaded it: `note_unrecorded_change`), else that of `source`'s provenance file.
    Without this, `AutoModelForSeq2SeqLM.from_pretrained(target, trust_remote_code=True)` needs
    mega2bart installed, and `mega2bart info` cannot say which weights started random.
    """
    target = Path(target)
    remote_code.write_remote_code(target)
    provenance = Path(source).expanduser() / BUILD_INFO_FILE if source is not None else None
    has_file = provenance is not None and provenance.is_file()
    record = _read_json_object(target / "config.json").get(CONFIG_BUILD_KEY)
    if not has_file and not (isinstance(record, dict) and "random_init" in record):
        logger.info("%s has no %s: %s gets the remote code only", source, BUILD_INFO_FILE, target)
        return
    description = ModelDescription.from_dict(json.loads(provenance.read_text()) if has_file else {})
    if isinstance(record, dict) and "random_init" in record:
        description = describe_mega2bart(target, build_info=BuildInfo.from_dict(record))
    if training is not None:
        run = dict(training)
        build = description.build
        if build is not None:
            fingerprint = folder_fingerprint(target, recorded_ties(build))
            if fingerprint is not None:
                run["weights"] = fingerprint.to_dict()
        # a provenance file without a build record (saved from a loaded model) keeps the runs at the top level
        runs = build.training if build is not None else description.extra.setdefault("training", [])
        runs.append(run)
    (target / BUILD_INFO_FILE).write_text(description.to_json())
    if description.build is not None:  # the config's record (read first, kept by any later save) says the same
        config_path = target / "config.json"
        config = json.loads(config_path.read_text())
        config[CONFIG_BUILD_KEY] = description.build.to_dict()
        staged = config_path.with_name(config_path.name + ".tmp")
        staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        os.replace(staged, config_path)


def _read_json_object(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text()) if path.is_file() else {}
    return data if isinstance(data, dict) else {}


def load_mega2bart(model_dir: str | os.PathLike, **kwargs: Any) -> tuple[Mega2BartModel, PreTrainedTokenizerBase]:
    """Load a saved mega2bart directory as a `Mega2BartModel` + its tokenizer.

    `Mega2BartModel` has the GA-correct loss (training) and shared-encoder beam search (inference).
    `AutoModelForSeq2SeqLM.from_pretrained(model_dir)` (after `import mega2bart`) gives the plain
    EncoderDecoderModel with the same weights and transformers' stock generation.
    """
    path, source = resolve_source(model_dir, "model")
    check_model_files(path)
    try:
        model = Mega2BartModel.from_pretrained(path, revision=source.revision, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, revision=source.revision)
    except (OSError, ValueError) as exc:
        raise hub_error("model", source, exc) from exc
    check_rows_hold_tokenizer(
        tokenizer,
        vocabulary_rows({"encoder": model.encoder, "decoder": model.decoder}),
        f"model {os.fspath(model_dir)!r}",
        "its embeddings were resized below its tokenizer: resize them to at least the tokenizer's size "
        "(`resize_token_embeddings`) and save the model again, or use the tokenizer it was trained with",
    )
    problems = generation_problems(model.generation_config.to_dict())
    if problems:
        raise BuildError(
            f"model {os.fspath(model_dir)!r}: generation_config.json: {'; '.join(problems)}; fix the file, or "
            "build the model again (`mega2bart build --max-new-tokens/--min-new-tokens/--num-beams`)"
        )
    return model, tokenizer


__all__ = [
    "STALE_STAGING_AGE_S",
    "load_mega2bart",
    "remove_stale_staging",
    "save_mega2bart",
    "ship_build_files",
    "write_atomically",
]
