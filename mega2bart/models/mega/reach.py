"""How far each MEGA layer's EMA carries a token, from the weights alone (`mega2bart info`).

Per EMA dimension (kernel row d, component n; D = 2H rows when bidirectional, N = `ema_projection_size`):
    p = sigmoid(damping_factor), q = 1 - p * sigmoid(decay_factor)    # (D, N, 1)
and the dimension's share of the kernel at lag k is proportional to q^k (peak at k = 0). It falls to
1/e of its peak after 1 / -ln q tokens and to 1% after ln(100) / -ln q tokens. q is in (0, 1): q -> 0
gives a reach of ~0 tokens, q -> 1 (p * delta below float64's resolution) an infinite one. eta and beta
scale a dimension's kernel, not its decay, so they do not enter.

Attention is confined to chunks of `chunk_size` tokens when `use_chunking`: only the EMA carries
information from one chunk to the next, so the table counts the dimensions whose 1% reach passes one
chunk. With `truncation` set the kernel has only that many taps, and nothing reaches beyond them.

Reads only torch (not shipped as remote code: `mega2bart/builder/remote_code.py` lists the shipped files).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from typing import Any

import torch

_EMA_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.mega_layer\.ema_gate\.(damping_factor|decay_factor)$")
"""A MEGA EMA factor's state-dict key, any prefix ("", "mega.", "encoder.", ...): (layer index, factor)."""
ONE_PERCENT = 0.01


def ema_reach(damping_factor: torch.Tensor, decay_factor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension reach in tokens, float64, flattened to (D*N,): (to 1/e of the peak, to 1% of the peak)."""
    p = torch.sigmoid(damping_factor.double())  # (D, N, 1): alpha in the paper
    delta = torch.sigmoid(decay_factor.double())  # (D, N, 1)
    minus_log_q = -torch.log1p(-(p * delta)).flatten()  # (D*N,): -ln q, exact for p * delta near 0
    e_fold = 1.0 / minus_log_q  # -ln q = 0 (q = 1 in float64) -> inf; q = 0 -> 0
    return e_fold, e_fold * math.log(1.0 / ONE_PERCENT)


@dataclasses.dataclass(frozen=True)
class ReachStats:
    """Minimum, median and maximum reach over a layer's dimensions, in tokens (inf for q = 1)."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, reach: torch.Tensor) -> ReachStats:
        ordered = reach.sort().values
        n = ordered.numel()
        median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
        return cls(ordered[0].item(), median.item(), ordered[-1].item())

    def to_dict(self) -> dict[str, float | str]:
        return {name: _json_tokens(value) for name, value in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class LayerReach:
    """One MEGA layer's EMA reach: 1/e and 1% statistics, and how many dimensions pass one chunk."""

    layer: int
    dimensions: int
    """D * N: kernel rows (2H when bidirectional) times `ema_projection_size`."""
    to_1_over_e: ReachStats
    to_1_percent: ReachStats
    beyond_chunk: int | None
    """Dimensions whose 1% reach (cut at `truncation`) exceeds one chunk; None without chunking."""

    @property
    def share_beyond_chunk(self) -> float | None:
        return None if self.beyond_chunk is None else self.beyond_chunk / self.dimensions

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "dimensions": self.dimensions,
            "to_1_over_e": self.to_1_over_e.to_dict(),
            "to_1_percent": self.to_1_percent.to_dict(),
            "beyond_chunk": self.beyond_chunk,
            "share_beyond_chunk": self.share_beyond_chunk,
        }


@dataclasses.dataclass(frozen=True)
class EmaReach:
    """Every layer's EMA reach of one MEGA model, with the chunk and truncation it is read against."""

    layers: list[LayerReach]
    chunk_size: int | None
    """The attention chunk when `use_chunking`, else None (attention sees the whole input)."""
    truncation: int | None

    @property
    def crosses_a_chunk(self) -> bool | None:
        """Whether any dimension of any layer reaches past one chunk; None without chunking."""
        if self.chunk_size is None:
            return None
        return any(layer.beyond_chunk for layer in self.layers)

    @property
    def warning(self) -> str | None:
        """One line when the model chunks its attention and no EMA dimension reaches past a chunk."""
        if self.crosses_a_chunk is not False:
            return None
        cut = (
            f" (the kernel is truncated to {self.truncation:,} taps)"
            if self.truncation is not None and self.truncation <= self.chunk_size
            else ""
        )
        return (
            f"warning: no EMA dimension reaches past one chunk ({self.chunk_size:,} tokens){cut}: nothing crosses a "
            "chunk but the few tokens at its edges (one chunk further per layer at most), so the model can hardly "
            "use context beyond a chunk; a long-reach EMA init trained on long inputs is what reaches further"
        )

    def table_lines(self) -> list[str]:
        """The reach table `mega2bart info` prints: a heading, one row per layer (indented two spaces)."""
        dims = sorted({layer.dimensions for layer in self.layers})
        chunk = f"chunk {self.chunk_size:,}" if self.chunk_size is not None else "no chunking"
        lines = [
            "EMA reach (tokens until an impulse fades to 1/e and to 1% of its peak; "
            f"{'/'.join(str(d) for d in dims)} dimensions per layer; {chunk}):"
        ]
        if self.truncation is not None:
            lines.append(
                f"  truncation {self.truncation:,}: the kernel has {self.truncation:,} taps, reach beyond is cut"
            )
        header = ("layer", "1/e min", "1/e median", "1/e max", "1% min", "1% median", "1% max", "1% > chunk")
        rows = [header]
        for layer in self.layers:
            beyond = "n/a" if layer.beyond_chunk is None else f"{layer.beyond_chunk}/{layer.dimensions}"
            share = layer.share_beyond_chunk
            if share is not None:
                beyond += " (<1%)" if 0 < share < 0.01 else f" ({share:.0%})"
            stats = (*dataclasses.astuple(layer.to_1_over_e), *dataclasses.astuple(layer.to_1_percent))
            rows.append((str(layer.layer), *(_tokens(value) for value in stats), beyond))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: an infinite reach is the string "inf" (`float("inf")` reads it back)."""
        return {
            "chunk_size": self.chunk_size,
            "truncation": self.truncation,
            "crosses_a_chunk": self.crosses_a_chunk,
            "warning": self.warning,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def mega_reach(tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> EmaReach:
    """The EMA reach of every layer of one MEGA model.

    Args:
        tensors: its state dict, or any part of it holding every layer's `ema_gate.damping_factor` and
            `ema_gate.decay_factor` (under any one prefix: "" for MegaModel, "mega." for the heads,
            "encoder." inside a mega2bart model). Other keys are ignored.
        config: its config.json as a dict (`use_chunking`, `chunk_size`, `truncation`).

    Raises:
        ValueError: no EMA factors, a layer with only one of them, or two models' factors mixed.
    """
    factors: dict[int, dict[str, torch.Tensor]] = {}
    prefixes = set()
    for key, tensor in tensors.items():
        match = _EMA_KEY.search(key)
        if match is not None:
            prefixes.add(key[: match.start()])
            factors.setdefault(int(match.group(1)), {})[match.group(2)] = tensor
    if not factors:
        raise ValueError("no MEGA EMA factors (keys ending in `layers.N.mega_layer.ema_gate.damping_factor`)")
    if len(prefixes) > 1:
        raise ValueError(f"EMA factors of more than one model (key prefixes {sorted(prefixes)}): pass one model's")
    chunk_size = config.get("chunk_size") if config.get("use_chunking") else None
    truncation = config.get("truncation")
    layers = []
    for index in sorted(factors):
        if len(factors[index]) != 2:
            raise ValueError(f"layer {index} has only {sorted(factors[index])} of damping_factor and decay_factor")
        e_fold, one_percent = ema_reach(factors[index]["damping_factor"], factors[index]["decay_factor"])
        beyond = None
        if chunk_size is not None:
            cut = one_percent if truncation is None else one_percent.clamp(max=truncation)
            beyond = int((cut > chunk_size).sum())
        layers.append(
            LayerReach(index, e_fold.numel(), ReachStats.of(e_fold), ReachStats.of(one_percent), beyond_chunk=beyond)
        )
    return EmaReach(layers, chunk_size=chunk_size, truncation=truncation)


def _tokens(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _json_tokens(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


__all__ = ["EmaReach", "LayerReach", "ReachStats", "ema_reach", "mega_reach"]
