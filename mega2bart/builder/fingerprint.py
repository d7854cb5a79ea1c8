"""A fingerprint of a model's weights, so that `mega2bart info` can tell whether a folder still holds the
weights its build record names (`BuildInfo.weights`, and the `weights` of each training run `mega2bart train`
records) or weights changed by something mega2bart did not record.

What is hashed, and why:
- Every tensor the model saves (parameters and persistent buffers): one line per name with its dtype, its
  shape and the xxh3-128 hash of its bytes (C order, as safetensors stores them); the lines, sorted by name,
  are hashed again. A changed value, dtype, shape or name changes the fingerprint; names keep a swap of two
  same-shaped tensors from going unnoticed.
- Tied weights: one tensor under several names (a decoder's embeddings and its output layer) is saved once,
  under the name its saver keeps. The fingerprint lists the tied groups (`tied`) and gives a folder's tensor
  every name of its group, so a group reads the same however it was saved (an untied copy of equal values
  included); in memory each name of a group is already there.
- dtype: besides the fingerprint in the weights' own dtype, `casts` holds the fingerprints of the same weights
  with every floating tensor cast to the other half/full precisions (`model.to(dtype)`), so a folder saved in
  bfloat16 reads as "the recorded weights, cast to bfloat16", not as a change.
- Cost: xxh3 hashes several GB/s, and a folder's tensors are read one at a time; on a 377M-parameter float32
  model (1.5 GB) both the build's fingerprint (three precisions) and a folder's take under a second of CPU
  (benchmarks/bench_fingerprint.py, run F1 in benchmarks/README.md).

It detects changes, not forgeries: xxh3 is not a cryptographic hash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:
    from .provenance import BuildInfo

logger = logging.getLogger(__name__)

ALGORITHM = "xxh3_128"
"""The hash of each tensor's bytes and of the sorted lines (prefix of every fingerprint string)."""
PRECISIONS = (torch.float32, torch.bfloat16, torch.float16)
"""The floating dtypes a folder may be saved in: each has a fingerprint (the weights' own, or a cast)."""


@dataclasses.dataclass
class WeightsFingerprint:
    """The fingerprint of a model's weights (`BuildInfo.weights`, a recorded run's `weights`)."""

    dtype: str
    """The floating dtype of the weights ("float32", ...; "mixed" when they have several)."""
    fingerprint: str
    casts: dict[str, str] = dataclasses.field(default_factory=dict)
    """dtype -> the fingerprint of the weights with every floating tensor cast to it."""
    tied: list[list[str]] = dataclasses.field(default_factory=list)
    """The names of each group of tied tensors (one tensor under several names), sorted."""

    def matches(self, other: WeightsFingerprint) -> str | None:
        """How `other` (a folder's weights) relates to these: "same", "cast to <dtype>", or None (different)."""
        if other.dtype == self.dtype and other.fingerprint == self.fingerprint:
            return "same"
        if self.casts.get(other.dtype) == other.fingerprint:
            return f"cast to {other.dtype}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "fingerprint": self.fingerprint, "casts": dict(self.casts), "tied": self.tied}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightsFingerprint:
        return cls(
            dtype=str(data.get("dtype")),
            fingerprint=str(data.get("fingerprint")),
            casts={str(k): str(v) for k, v in (data.get("casts") or {}).items()},
            tied=[[str(name) for name in group] for group in data.get("tied") or []],
        )


def _digest(tensor: torch.Tensor) -> str:
    import xxhash

    # the bytes safetensors stores: C order, native (little-endian) byte order
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return xxhash.xxh3_128(flat.view(torch.uint8).numpy()).hexdigest()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _dtype_label(dtypes: Iterable[torch.dtype]) -> str:
    floating = {dtype for dtype in dtypes if dtype.is_floating_point}
    return _dtype_name(floating.pop()) if len(floating) == 1 else "mixed"


def _alias_key(tensor: torch.Tensor) -> tuple[Any, ...] | None:
    """Equal for two views of the same memory with the same layout (tied weights); None for an empty tensor."""
    if not tensor.numel():
        return None
    storage = tensor.untyped_storage().data_ptr()
    return storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype


def _fingerprint(
    tensors: Iterable[tuple[str, torch.Tensor]], tied: list[list[str]], with_casts: bool = True
) -> WeightsFingerprint:
    """The fingerprint of `tensors` (read one at a time), with the casts to every other of `PRECISIONS`
    (`with_casts`: a check needs only the folder's own).

    A name of a `tied` group that `tensors` lacks gets the entry of the group's name that it has, so a tensor
    saved once under one of its names hashes as if every name had been saved.
    """
    import xxhash

    targets: list[torch.dtype | None] = [None, *(PRECISIONS if with_casts else ())]
    # per target: name -> "dtype<TAB>shape<TAB>digest" (the line without its name)
    entries: list[dict[str, str]] = [{} for _ in targets]
    done: dict[tuple[Any, ...], list[str]] = {}
    dtypes: set[torch.dtype] = set()
    for name, tensor in tensors:
        dtypes.add(tensor.dtype)
        key = _alias_key(tensor)
        if key is None or key not in done:
            own = f"{_dtype_name(tensor.dtype)}\t{tuple(tensor.shape)}\t{_digest(tensor)}"
            found = []
            for dtype in targets:
                if dtype is None or dtype == tensor.dtype or not tensor.is_floating_point():
                    found.append(own)
                else:
                    cast = tensor.to(dtype)
                    found.append(f"{_dtype_name(dtype)}\t{tuple(cast.shape)}\t{_digest(cast)}")
            if key is not None:
                done[key] = found
        else:  # an alias of a tensor already hashed (tied weights in memory)
            found = done[key]
        for by_name, entry in zip(entries, found, strict=True):
            by_name[name] = entry
    for by_name in entries:
        for group in tied:
            present = [name for name in group if name in by_name]
            for name in group:
                if present and name not in by_name:
                    by_name[name] = by_name[present[0]]

    def combine(by_name: dict[str, str]) -> str:
        text = "".join(f"{name}\t{by_name[name]}\n" for name in sorted(by_name))
        return f"{ALGORITHM}:{xxhash.xxh3_128(text.encode()).hexdigest()}"

    label = _dtype_label(dtypes)
    casts = {
        _dtype_name(dtype): combine(by_name)
        for dtype, by_name in zip(targets[1:], entries[1:], strict=True)
        if _dtype_name(dtype) != label
    }
    return WeightsFingerprint(dtype=label, fingerprint=combine(entries[0]), casts=casts, tied=tied)


def tied_groups(model: torch.nn.Module) -> list[list[str]]:
    """The names of each group of state-dict entries that share one tensor (tied weights), sorted."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, tensor in model.state_dict().items():
        key = _alias_key(tensor)
        if key is not None:
            groups.setdefault(key, []).append(name)
    return sorted(sorted(names) for names in groups.values() if len(names) > 1)


def model_fingerprint(model: torch.nn.Module) -> WeightsFingerprint:
    """The fingerprint of `model`'s weights in memory (what `save_pretrained` writes), with its casts."""
    return _fingerprint(model.state_dict().items(), tied_groups(model))


def _weight_files(directory: Path) -> tuple[str, list[Path]]:
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return "safetensors", files
    return "bin", sorted(directory.glob("pytorch_model*.bin"))


def _read_tensors(kind: str, files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for file in files:
        if kind == "safetensors":
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
        else:  # torch.save keeps tied tensors shared: each name is there, the aliases hashed once
            yield from torch.load(file, map_location="cpu", weights_only=True, mmap=True).items()


def folder_fingerprint(
    model_dir: str | os.PathLike, tied: Iterable[Iterable[str]] = (), *, with_casts: bool = True
) -> WeightsFingerprint | None:
    """The fingerprint of the weights saved in `model_dir` (safetensors, else `pytorch_model*.bin`), with its
    casts; None without weights. `tied`: the tied groups of the record it is compared with."""
    kind, files = _weight_files(Path(model_dir).expanduser())
    if not files:
        return None
    return _fingerprint(_read_tensors(kind, files), [sorted(group) for group in tied], with_casts)


UNRECORDED = "changed by a run mega2bart did not record"
"""The event `mega2bart train` records when the model it loads is not what its record's last fingerprint says."""


@dataclasses.dataclass
class WeightsCheck:
    """How a folder's weights compare with the last fingerprint its build record holds (computed by
    `check_weights` each time, never stored: the weights are what a later tool may change)."""

    status: Literal["as recorded", "changed", "unknown"]
    against: str
    """What they were compared with: "the build" or "the last recorded change"."""
    detail: str = ""
    """"cast to bfloat16" (as recorded), or why the status is unknown."""

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def check_weights(model_dir: str | os.PathLike, build: BuildInfo) -> WeightsCheck:
    """Compare the weights in `model_dir` with the fingerprint of the last change `build` records, else of the
    build itself. A last change without one (a resize, a run recorded by an earlier version) leaves it unknown."""
    against = "the last recorded change" if build.training else "the build"
    recorded = build.training[-1].get("weights") if build.training else build.weights
    if not isinstance(recorded, Mapping):
        if build.training:
            last = build.training[-1]
            why = f"the last recorded change ({last.get('event', 'a training run')}) has no weight fingerprint"
        else:
            why = f"the record has no weight fingerprint (written by mega2bart {build.mega2bart_version})"
        return WeightsCheck("unknown", against, f"{why}: a later change by another tool would not show")
    expected = WeightsFingerprint.from_dict(recorded)
    actual = folder_fingerprint(model_dir, expected.tied, with_casts=False)
    if actual is None:
        return WeightsCheck("unknown", against, "no weights in the folder to compare")
    how = expected.matches(actual)
    if how is None:
        return WeightsCheck("changed", against)
    return WeightsCheck("as recorded", against, "" if how == "same" else how)


def recorded_ties(build: BuildInfo) -> list[list[str]]:
    """The tied groups of the last fingerprint `build` holds (its last fingerprinted change, else the build's)."""
    for recorded in [*(event.get("weights") for event in reversed(build.training)), build.weights]:
        if isinstance(recorded, Mapping):
            return WeightsFingerprint.from_dict(recorded).tied
    return []


def note_unrecorded_change(record: dict[str, Any] | None, model_dir: str | os.PathLike) -> WeightsCheck | None:
    """Before training the model loaded from `model_dir`: when its weights are not what its build `record` (the
    `mega2bart_build` dict of its config) last fingerprinted, append the `UNRECORDED` event to the record, so
    that every later save says so. Returns the check; None without a record or a local directory."""
    from .provenance import BuildInfo

    directory = Path(model_dir).expanduser()
    if not isinstance(record, dict) or "random_init" not in record or not directory.is_dir():
        return None
    check = check_weights(directory, BuildInfo.from_dict(record))
    if check.status == "changed":
        logger.warning("%s: the weights are not those its record last fingerprinted: %s", directory, UNRECORDED)
        event = {"event": UNRECORDED, "found": f"by mega2bart train, after {check.against}"}
        record.setdefault("training", []).append(event)
    return check


__all__ = [
    "ALGORITHM",
    "PRECISIONS",
    "UNRECORDED",
    "WeightsCheck",
    "WeightsFingerprint",
    "check_weights",
    "folder_fingerprint",
    "model_fingerprint",
    "note_unrecorded_change",
    "recorded_ties",
    "tied_groups",
]
