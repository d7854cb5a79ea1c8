"""Build, save, load and describe a mega2bart model: a MEGA encoder + a BART decoder in one EncoderDecoderModel.

    model, tokenizer = build_mega2bart()                       # seed encoder + facebook/bart-large
    model, tokenizer = build_mega2bart(**preset_kwargs("tiny"))  # random toy, offline
    save_mega2bart(model, tokenizer, "out/mega2bart-large")
    model, tokenizer = load_mega2bart("out/mega2bart-large")

One module per concern:

- `sources`: Hub ids (`owner/name@revision`), directories and presets -> `Source` records.
- `loading`: the encoder, decoder and tokenizer, with the checkpoint edits each needs.
- `checks`: roles, cross-attention, vocabularies and special ids, context length.
- `generation`: the generation defaults and their checks.
- `assemble`: `build_mega2bart`, a short sequence of the steps above.
- `provenance`: `BuildInfo`, what the build records (sources, random-init weights, training runs since).
- `fingerprint`: the fingerprint of the weights the record holds, and the check of a folder's weights against it.
- `describe`: `ModelDescription` (`mega2bart info`, mega2bart_build.json) and `MegaDescription`
  (`mega2bart info` on a bare MEGA directory).
- `save`, `remote_code`, `modelcard`: the atomic save, the remote-code files, the model card.

Every non-obvious step is logged: the random-init weights (with parameter counts), the
`enc_to_dec_proj` added when the widths differ, the vocabulary / special-token alignment, the
context length and the generation defaults. User errors raise `BuildError` naming the problem,
the value and the fix.
"""

from __future__ import annotations

from .assemble import DEFAULT_SEED, build_mega2bart, parameter_counts
from .checks import check_cross_attention, check_mega_decoder, check_vocabularies, encoder_context_length
from .describe import (
    BUILD_INFO_FILE,
    BuildInfo,
    MegaDescription,
    ModelDescription,
    RandomInitTensor,
    describe_mega2bart,
    describe_model,
    read_build_info,
)
from .errors import BuildError
from .generation import DEFAULT_GENERATION, check_generation_settings, default_generation_config
from .loading import LoadedPart, load_decoder, load_encoder, load_tokenizer
from .remote_code import REMOTE_CODE_FILES
from .save import load_mega2bart, remove_stale_staging, save_mega2bart, ship_build_files
from .sources import Source, preset_kwargs

__all__ = [
    "BUILD_INFO_FILE",
    "DEFAULT_GENERATION",
    "DEFAULT_SEED",
    "REMOTE_CODE_FILES",
    "BuildError",
    "BuildInfo",
    "LoadedPart",
    "MegaDescription",
    "ModelDescription",
    "RandomInitTensor",
    "Source",
    "build_mega2bart",
    "check_cross_attention",
    "check_generation_settings",
    "check_mega_decoder",
    "check_vocabularies",
    "default_generation_config",
    "describe_mega2bart",
    "describe_model",
    "encoder_context_length",
    "load_decoder",
    "load_encoder",
    "load_mega2bart",
    "load_tokenizer",
    "parameter_counts",
    "preset_kwargs",
    "read_build_info",
    "remove_stale_staging",
    "save_mega2bart",
    "ship_build_files",
]
