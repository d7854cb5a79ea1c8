"""Tiny MEGA configurations shared by the MEGA tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

import mega2bart
from mega2bart.models.mega import MEGA_AUTO_MAP, MegaConfig

PACKAGE = Path(mega2bart.__file__).resolve().parent
_MEGA_CODE = PACKAGE / "models" / "mega"
MEGA_FILES = {name: _MEGA_CODE / name for name in ("configuration_mega.py", "modeling_mega.py")}
"""The files a saved MEGA folder carries, and the package files they are copies of."""

SEED_LIKE = dict(
    # the seed checkpoint's options (docs/mega.md#seed-configuration) at toy sizes
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    intermediate_size=96,
    nffn_hidden_size=96,
    shared_representation_size=8,
    ema_projection_size=4,
    use_chunking=True,
    chunk_size=16,
    max_positions=64,
    relative_positional_bias="simple",
    normalization_type="scalenorm",
    normalize_before_mega=False,
    normalize_before_ffn=False,
    add_token_type_embeddings=True,
    add_lm_hidden_dense_layer=False,
    dropout_prob=0.0,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    nffn_activation_dropout_prob=0.0,
)


def tiny_config(**overrides) -> MegaConfig:
    return MegaConfig(**{**SEED_LIKE, **overrides})


def perturbed(model: torch.nn.Module, seed: int = 1, scale: float = 0.05) -> torch.nn.Module:
    """Add scale * N(0, 1) to every parameter (deterministic), so no weight sits at its init value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Token ids in [3, 128) for the tiny vocabulary (no special tokens)."""
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def assert_self_contained(folder: Path) -> None:
    """`folder` carries the MEGA code (the package's own files, unchanged) and an auto_map naming every MEGA Auto
    class, so it loads with trust_remote_code where mega2bart is not installed."""
    for name, source in MEGA_FILES.items():
        assert (folder / name).read_bytes() == source.read_bytes(), f"{folder}/{name}"
    assert json.loads((folder / "config.json").read_text())["auto_map"] == MEGA_AUTO_MAP


def run_without_mega2bart(
    report: Path, script: Path, args: list[str], cwd: Path, env: dict
) -> subprocess.CompletedProcess:
    """`python script args` in a `python -I -S` process where mega2bart cannot be imported
    (example_script_runner.py); REPORT gets what that process proved (the import's error, no mega2bart module)."""
    paths = sysconfig.get_paths()
    site_packages = os.pathsep.join(sorted({paths["purelib"], paths["platlib"]}))
    runner = Path(__file__).with_name("example_script_runner.py")
    command = [sys.executable, "-I", "-S", str(runner), str(report), site_packages, str(PACKAGE), str(script), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
