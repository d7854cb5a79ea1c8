"""Damaged model folders for the fault tests: one copy of a model directory per kind of damage, and the file
that a one-line error about it must name."""

from __future__ import annotations

import shutil
from pathlib import Path

NAMED_FILE = {
    "config-malformed": "config.json",
    "config-list": "config.json",
    "generation-malformed": "generation_config.json",
    "weights-header": "model.safetensors",
    "weights-cut": "model.safetensors",
    "weights-text": "model.safetensors",
}
KINDS = tuple(NAMED_FILE)


def damage(source: Path, target: Path, kind: str) -> Path:
    """`target`: a copy of the model directory `source` with damage `kind` (one of KINDS); also "missing" (no
    folder at all) and "empty-dir" (an empty folder)."""
    if kind == "missing":
        return target
    if kind == "empty-dir":
        target.mkdir()
        return target
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if kind == "config-malformed":
        (target / "config.json").write_text("{bad", encoding="utf-8")
    elif kind == "config-list":
        (target / "config.json").write_text("[1, 2]", encoding="utf-8")
    elif kind == "generation-malformed":
        (target / "generation_config.json").write_text('{"max_length": ', encoding="utf-8")
    elif kind == "weights-header":
        weights.write_bytes(weights.read_bytes()[:100])
    elif kind == "weights-cut":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) * 9 // 10])
    elif kind == "weights-text":
        weights.write_text("not a safetensors file\n", encoding="utf-8")
    else:
        raise AssertionError(kind)
    return target
