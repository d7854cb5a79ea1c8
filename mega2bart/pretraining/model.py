"""The model and tokenizer a pretraining run starts from: `load_mlm_model` (a MEGA checkpoint or the "tiny"
preset), `load_pretrain_tokenizer`, and `check_compatible` (vocabulary, special tokens, chunk size)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from .config import TINY_ENCODER, Phase, PretrainConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from mega2bart.models.mega import MegaForMaskedLM

logger = logging.getLogger(__name__)


def load_mlm_model(spec: str) -> MegaForMaskedLM:
    """A MEGA MLM model from a checkpoint (MegaForMaskedLM or MegaModel) or the "tiny" preset config."""
    from transformers import AutoConfig

    import mega2bart  # noqa: F401  (registers model_type "mega")
    from mega2bart.models.mega import MegaConfig, MegaForMaskedLM

    if spec == TINY_ENCODER and not Path(spec).exists():
        from mega2bart.builder.loading import choose_long_reach
        from mega2bart.presets import TINY_ENCODER as TINY_ENCODER_CONFIG

        logger.info("encoder 'tiny': random-init MEGA with the tiny preset config")
        config = MegaConfig(**TINY_ENCODER_CONFIG)
        choose_long_reach(config, "encoder 'tiny'")
        return MegaForMaskedLM(config)
    path = Path(spec).expanduser()
    if (spec.startswith((".", "/", "~")) or path.exists()) and not (path / "config.json").is_file():
        raise FileNotFoundError(f"encoder {spec!r} is not a model directory (no config.json): pass a MEGA checkpoint")
    from mega2bart.builder.integrity import check_model_files

    check_model_files(path, "encoder")
    try:
        config = AutoConfig.from_pretrained(spec)
    except OSError as exc:
        raise ValueError(f"could not load the encoder config from {spec!r}: {exc}") from exc
    if config.model_type != "mega":
        hint = (
            " (a built mega2bart model: pass the MEGA encoder it was built from)"
            if config.model_type == "encoder-decoder"
            else ""
        )
        raise ValueError(f"encoder {spec!r} is a {config.model_type!r} model, not MEGA{hint}")
    config.is_decoder = False
    model, info = MegaForMaskedLM.from_pretrained(spec, config=config, output_loading_info=True)
    if info["missing_keys"]:
        logger.info("encoder %s: not in the checkpoint, newly initialised: %s", spec, sorted(info["missing_keys"]))
    return model


def load_pretrain_tokenizer(config: PretrainConfig) -> PreTrainedTokenizerBase:
    spec = config.tokenizer
    longest = max(phase.max_length for phase in config.resolved_phases())
    if spec == "offline" or (spec is None and config.encoder == TINY_ENCODER and not Path(TINY_ENCODER).exists()):
        from mega2bart.tokenization import load_offline_tokenizer

        return load_offline_tokenizer(model_max_length=max(longest, 16384))
    from transformers import AutoTokenizer

    name = spec or config.encoder
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"no tokenizer could be loaded from {name!r} ({type(exc).__name__}): pass tokenizer='offline' "
            "(BART layout, offline) or a tokenizer directory / Hub id"
        ) from exc
    if tokenizer.mask_token_id is None:
        raise ValueError(f"tokenizer {name!r} has no mask token; MLM needs one (e.g. '<mask>')")
    return tokenizer


def check_compatible(model: MegaForMaskedLM, tokenizer: PreTrainedTokenizerBase, phases: list[Phase]) -> None:
    vocab = model.config.vocab_size
    if len(tokenizer) > vocab:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but the encoder's vocab_size is {vocab}: use the encoder's "
            "own tokenizer (or one with at most vocab_size tokens)"
        )
    if tokenizer.bos_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs bos and eos tokens (<s>, </s>) to pack documents")
    chunk = model.config.chunk_size if model.config.use_chunking else None
    for phase in phases:
        if chunk and phase.max_length > chunk and phase.max_length % chunk:
            logger.warning(
                "max_length %d is not a multiple of chunk_size %d: every sequence is padded inside the model to %d",
                phase.max_length,
                chunk,
                math.ceil(phase.max_length / chunk) * chunk,
            )
