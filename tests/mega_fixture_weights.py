"""Deterministic, trained-looking MEGA weights for parity fixtures too large to commit.

Pure torch + stdlib on purpose: `scripts/make_fixtures.py` imports this module from the
transformers 4.57.1 venv and `tests/test_mega_parity.py` imports it from the project venv,
so both sides regenerate bit-identical tensors from nothing but the key names and shapes.

Every tensor is drawn from its own `torch.Generator`, seeded with
`zlib.crc32(key) ^ seed`, so a value depends only on (key, shape, seed, torch's CPU RNG),
never on the iteration order or on which other keys exist.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch

__all__ = ["seeded_state_dict", "state_dict_checksum"]


def _generator(key: str, seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed((zlib.crc32(key.encode("utf-8")) ^ seed) & 0xFFFFFFFF)
    return gen


def _randn(shape: Sequence[int], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32)


def _seeded_tensor(key: str, shape: Sequence[int], seed: int, padding_idx: int | None) -> torch.Tensor:
    """One tensor whose value distribution resembles a trained MEGA checkpoint's."""
    gen = _generator(key, seed)
    name = key.rsplit(".", 1)[-1]

    if name == "num_batches_tracked":
        return torch.tensor(1000, dtype=torch.int64)
    if name in ("damping_factor", "decay_factor"):
        # (rows, N, 1): noise plus a per-component offset sweeping the sigmoid from ~0.05 to
        # ~0.95, so that q = 1 - sigmoid(damping) * sigmoid(decay) covers both short and
        # long memories (some kernels still non-negligible after 1024 lags).
        n = shape[1]
        offsets = torch.linspace(-3.0, 3.0, n) if name == "damping_factor" else torch.linspace(3.0, -3.0, n)
        return _randn(shape, gen) * 0.3 + offsets.view(1, n, *([1] * (len(shape) - 2)))
    if name == "ema_expansion_matrix":
        # (rows, N, 1): the [1, -1, 1, -1, ...] init pattern plus noise
        n = shape[1]
        pattern = torch.ones(n)
        pattern[1::2] = -1.0
        return _randn(shape, gen) * 0.1 + pattern.view(1, n, *([1] * (len(shape) - 2)))
    if name in ("kernel_projection_matrix", "residual_weight"):
        return _randn(shape, gen)
    if name == "qk_weight":
        return _randn(shape, gen)
    if name == "qk_bias":
        return _randn(shape, gen) * 0.1
    if name in ("alpha", "b_param"):  # rotary relative bias vectors
        return _randn(shape, gen) * 0.3
    if name == "rel_pos_bias":
        return _randn(shape, gen) * 0.05
    if name == "_float_tensor":  # rotary bias dtype carrier buffer
        return torch.zeros(tuple(shape), dtype=torch.float32)
    if name == "running_mean":
        return _randn(shape, gen) * 0.1
    if name == "running_var":
        return 1.0 + _randn(shape, gen).abs() * 0.2
    if ".norm." in key and name in ("scalar", "weight"):
        return 1.0 + _randn(shape, gen) * 0.1
    if name == "weight" and key.endswith("word_embeddings.weight"):
        emb = _randn(shape, gen) * 0.02
        if padding_idx is not None:
            emb[padding_idx] = 0.0
        return emb
    # linear weights, biases, other embeddings, LM-head bias, pooler
    return _randn(shape, gen) * 0.02


def seeded_state_dict(
    shapes: Mapping[str, Sequence[int]], seed: int = 0, padding_idx: int | None = 1
) -> dict[str, torch.Tensor]:
    """Return `{key: tensor}` for every key in `shapes`, deterministic in (key, shape, seed).

    `padding_idx` is the row of `*word_embeddings.weight` set to zero (MEGA's pad id is 1).
    Tied keys (e.g. `mlm_head.weight`) should be left out of `shapes` and tied by the caller.
    """
    return {key: _seeded_tensor(key, list(shape), seed, padding_idx) for key, shape in shapes.items()}


def state_dict_checksum(state_dict: Mapping[str, torch.Tensor]) -> float:
    """Sum of every element of every tensor, accumulated in float64 (order-independent per key)."""
    return float(sum(t.detach().to(torch.float64).sum().item() for _, t in sorted(state_dict.items())))
