"""A model directory's files checked before anything loads them: a damaged `config.json`, JSON side file or
`.safetensors` file becomes one `BuildError` that names the file and what is wrong with it, instead of a
traceback from deep inside `json`, transformers or safetensors."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .config_values import check_config_values, config_location
from .errors import BuildError

# JSON files a model directory may hold; the ones present must parse
_JSON_FILES = (
    "config.json",
    "generation_config.json",
    "mega2bart_build.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "model.safetensors.index.json",
)


def check_model_files(directory: str | os.PathLike, role: str = "model") -> None:
    """Raise `BuildError` if a file of the model directory `directory` is damaged: a JSON file above that
    does not parse (or is not an object), a config.json value no model can be built from
    (`check_config_values`), a pickle weights file with objects other than tensors, or a `.safetensors` file whose header does not read.
    A path that is not a directory is left to the caller (it may be a Hub id)."""
    path = Path(directory)
    if not path.is_dir():
        return
    for name in _JSON_FILES:
        file = path / name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BuildError(
                f"{role} {os.fspath(directory)!r}: {name} is damaged ({_first_line(exc)}): restore it, or build or "
                "save the model again"
            ) from exc
        if not isinstance(value, dict):
            raise BuildError(
                f"{role} {os.fspath(directory)!r}: {name} holds a JSON {type(value).__name__}, not an object: "
                "restore it, or build or save the model again"
            )
        if name == "config.json":
            check_config_values(value, config_location(role, directory))
    _check_pickle_weights(path, role, directory)
    for file in sorted(path.glob("*.safetensors")):
        _check_safetensors(file, role, directory)


def _check_pickle_weights(path: Path, role: str, directory: str | os.PathLike) -> None:
    """Weights only in a pickle file (`pytorch_model.bin`): transformers loads it with torch's `weights_only`
    unpickler, which refuses any object but tensors (unpickling one could run code); read it so here (memory-
    mapped: the tensors' bytes are not read) to say so in one line instead of torch's traceback."""
    import pickle

    import torch

    if any(path.glob("*.safetensors")):  # transformers loads those and leaves a .bin alone
        return
    for file in sorted(path.glob("pytorch_model*.bin")):
        try:
            torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(exc))
            what = f"e.g. {found.group(1)}" if found else _first_line(exc)
            raise BuildError(
                f"{role} {os.fspath(directory)!r}: {file.name} holds pickled objects other than tensors "
                f"({what}), which are not loaded because "
                "unpickling them can run code: save the weights as model.safetensors where you trust the file "
                "(`model.save_pretrained(dir)`), or use a copy that has model.safetensors"
            ) from None
        except (RuntimeError, OSError, EOFError, ValueError) as exc:
            raise BuildError(
                f"{role} {os.fspath(directory)!r}: {file.name} is damaged ({_first_line(exc)}): it is truncated or "
                "not a torch weights file; save or copy the model again"
            ) from None


def _check_safetensors(file: Path, role: str, directory: str | os.PathLike) -> None:
    """The header of `file` reads and every tensor it lists lies inside the file."""
    from safetensors import SafetensorError, safe_open

    size = file.stat().st_size
    try:
        with safe_open(str(file), framework="pt") as handle:
            handle.keys()
        # the header reads; the tensors it lists must end inside the file (a cut-off copy keeps its header)
        with file.open("rb") as fh:
            header_length = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_length))
        end = (
            8
            + header_length
            + max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
        )
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise BuildError(
            f"{role} {os.fspath(directory)!r}: {file.name} ({size:,} bytes) is damaged ({_first_line(exc)}): it is "
            "truncated or not a safetensors file; save or copy the model again"
        ) from exc
    if end > size:
        raise BuildError(
            f"{role} {os.fspath(directory)!r}: {file.name} is truncated ({size:,} of the {end:,} bytes its header "
            "lists): save or copy the model again"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


__all__ = ["check_model_files"]
