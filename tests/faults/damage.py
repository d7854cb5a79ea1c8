"""Damaged model folders for the fault tests: one copy of a model directory per kind of damage, and the file
that a one-line error about it must name."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# config.json values of the wrong type or out of range: (edit, the field a one-line error must name). A MEGA
# edit changes the MEGA config (a mega2bart model's "encoder" section, or a bare MEGA folder's config.json); a
# model edit changes a mega2bart model's config.json (its "decoder" section, or the sections themselves).
Edit = Callable[[dict[str, Any]], None]
MEGA_VALUES: dict[str, tuple[Edit, str]] = {
    "hidden-size-text": (lambda c: c.update(hidden_size="abc"), "hidden_size"),
    "hidden-size-bool": (lambda c: c.update(hidden_size=True), "hidden_size"),
    "layers-0": (lambda c: c.update(num_hidden_layers=0), "num_hidden_layers"),
    "chunk-size-0": (lambda c: c.update(chunk_size=0), "chunk_size"),
    "chunk-size-text": (lambda c: c.update(chunk_size="64"), "chunk_size"),
    "vocab-negative": (lambda c: c.update(vocab_size=-1), "vocab_size"),
    "positions-infinite": (lambda c: c.update(max_positions=float("inf")), "max_positions"),
    "ema-size-null": (lambda c: c.update(ema_projection_size=None), "ema_projection_size"),
    "intermediate-list": (lambda c: c.update(intermediate_size=[64]), "intermediate_size"),
    "chunking-text": (lambda c: c.update(use_chunking="yes"), "use_chunking"),
    "dropout-above-1": (lambda c: c.update(dropout_prob=1.5), "dropout_prob"),
    "norm-unknown": (lambda c: c.update(normalization_type="groupnorm"), "normalization_type"),
    "model-type-number": (lambda c: c.update(model_type=5), "model_type"),
}
MODEL_VALUES: dict[str, tuple[Edit, str]] = {
    "encoder-string": (lambda c: c.update(encoder="mega"), "encoder"),
    "decoder-list": (lambda c: c.update(decoder=[1, 2]), "decoder"),
    "decoder-missing": (lambda c: c.pop("decoder"), "decoder"),
    "decoder-layers-0": (lambda c: c["decoder"].update(decoder_layers=0), "decoder_layers"),
    "decoder-width-text": (lambda c: c["decoder"].update(d_model="64"), "d_model"),
    "decoder-width-float": (lambda c: c["decoder"].update(d_model=64.5), "d_model"),
    "decoder-heads-indivisible": (lambda c: c["decoder"].update(decoder_attention_heads=3), "decoder_attention_heads"),
    "decoder-vocab-0": (lambda c: c["decoder"].update(vocab_size=0), "vocab_size"),
    "decoder-positions-null": (lambda c: c["decoder"].update(max_position_embeddings=None), "max_position_embeddings"),
    "decoder-dropout-negative": (lambda c: c["decoder"].update(dropout=-0.1), "dropout"),
    "decoder-type-unknown": (lambda c: c["decoder"].update(model_type="nosuchmodel"), "nosuchmodel"),
    "start-id-outside-vocab": (lambda c: c.update(decoder_start_token_id=10**9), "decoder_start_token_id"),
    "pad-id-text": (lambda c: c.update(pad_token_id="1"), "pad_token_id"),
}


def damage_config(source: Path, target: Path, kind: str) -> Path:
    """`target`: a copy of the model directory `source` whose config.json has the bad value `kind` (a key of
    MEGA_VALUES or MODEL_VALUES); written as JSON (an infinite number as `Infinity`, as Python's json does)."""
    shutil.copytree(source, target, copy_function=os.link)  # hard links: only config.json is new
    path = target / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    path.unlink()
    if kind in MODEL_VALUES:
        MODEL_VALUES[kind][0](config)
    else:
        MEGA_VALUES[kind][0](config["encoder"] if config.get("model_type") == "encoder-decoder" else config)
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return target


def pickle_only(source: Path, target: Path) -> Path:
    """`target`: a copy of `source` whose weights are only a `pytorch_model.bin` that pickles, beside the tensors,
    a function (harmless here, but what torch's weights-only unpickler refuses: an object other than a tensor)."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(source, target, copy_function=os.link)
    weights = target / "model.safetensors"
    torch.save({**load_file(weights), "hook": print}, target / "pytorch_model.bin")
    weights.unlink()
    return target


def shrink_vocabulary(source: Path, target: Path, part: str, rows: int = 1000) -> Path:
    """`target`: a copy of `source` whose `part` ("encoder", "decoder", or "" for a bare MEGA model) has its token
    embeddings resized to `rows`, below its tokenizer's vocabulary (the tokenizer files are kept)."""
    import mega2bart  # noqa: F401  (registers MEGA)
    from mega2bart.builder import load_mega2bart
    from mega2bart.models.mega import MegaForMaskedLM

    shutil.copytree(source, target)
    if part:
        model, _ = load_mega2bart(source)
        getattr(model, part).resize_token_embeddings(rows)  # the part's config is the model's config section
    else:
        model = MegaForMaskedLM.from_pretrained(source)
        model.resize_token_embeddings(rows)
    model.save_pretrained(target)
    return target
