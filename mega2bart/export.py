"""`mega2bart export`: a MEGA checkpoint -> a folder anyone on transformers 5 loads, with no mega2bart installed.

    export_mega("BEE-spoke-data/mega-encoder-small-16k-v1", "mega-seed")   # the seed (4.x format, on the Hub)
    export_mega("runs/mega2bart-tiny", "mega-encoder")                    # a built or trained model's encoder

The source is a Hub id (`owner/name[@revision]`), a local MEGA folder (the 4.x port's format included:
`pytorch_model.bin`, no `auto_map`) or a mega2bart (encoder-decoder) model, whose MEGA encoder is exported.
The folder holds `model.safetensors`, config.json with an `auto_map` for AutoConfig and every Auto class MEGA
has a head for, the MEGA code (`configuration_mega.py`, `modeling_mega.py`: `MegaPreTrainedModel.save_pretrained`
writes both), the tokenizer and a model card (README.md: where it came from, how to load it). With
`push_to_hub` the folder is uploaded as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .builder.errors import BuildError
from .builder.integrity import check_model_files
from .builder.provenance import CONFIG_BUILD_KEY, BuildInfo
from .builder.sources import Source, hub_error, pin_revision, resolve_source

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from .models.mega import MegaPreTrainedModel

logger = logging.getLogger(__name__)


class MegaCheckpoint(NamedTuple):
    """A MEGA model to export and where it came from."""

    model: MegaPreTrainedModel
    """In its own class: MegaForMaskedLM for the seed, MegaModel for a mega2bart model's encoder."""
    source: Source
    """The folder or Hub id read (a Hub revision pinned to its commit)."""
    what: str
    """"MEGA", or "the encoder of a mega2bart model"."""
    built_from: Source | None = None
    """For a mega2bart model: the encoder source in its build record, when it has one."""


def load_mega_checkpoint(source: str | os.PathLike) -> MegaCheckpoint:
    """The MEGA model in `source`, a MEGA checkpoint or a mega2bart model (its encoder).

    Raises:
        BuildError: the source is missing, unreadable, or holds a model that is neither MEGA nor mega2bart.
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    from .models import mega

    path, origin = resolve_source(source, "model")
    check_model_files(path, "model")
    revision = pin_revision(path, origin)
    try:
        config = AutoConfig.from_pretrained(path, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise hub_error("model", origin, exc) from exc
    if config.model_type == "mega":
        architectures = getattr(config, "architectures", None) or ["MegaModel"]
        model_class = getattr(mega, architectures[0], None)
        if model_class not in mega.MEGA_AUTO_CLASSES.values():
            logger.info("%s: architecture %s is not a MEGA class: exported as MegaModel", source, architectures)
            model_class = mega.MegaModel
        load, what = model_class.from_pretrained, "MEGA"
    elif config.model_type == "encoder-decoder" and _encoder_type(config) == "mega":
        load, what = AutoModelForSeq2SeqLM.from_pretrained, "the encoder of a mega2bart model"
    else:
        encoder = f" with a {_encoder_type(config)!r} encoder" if config.model_type == "encoder-decoder" else ""
        raise BuildError(
            f"model {os.fspath(source)!r} is a {config.model_type!r} model{encoder}: pass a MEGA checkpoint, or a "
            "mega2bart model (its MEGA encoder is exported)"
        )
    try:
        model = load(path, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise hub_error("model", origin, exc) from exc
    built_from = None
    if what != "MEGA":
        model = model.get_encoder()
        built_from = _built_from(getattr(config, CONFIG_BUILD_KEY, None))
    origin.model_class = type(model).__name__
    return MegaCheckpoint(model, origin, what, built_from)


def _built_from(record: object) -> Source | None:
    if not isinstance(record, Mapping):
        return None
    try:
        return BuildInfo.from_dict(record).encoder
    except (KeyError, TypeError, ValueError):
        return None


def _encoder_type(config: PretrainedConfig) -> str | None:
    encoder = getattr(config, "encoder", None)
    return getattr(encoder, "model_type", None)


def export_mega(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    tokenizer: str | os.PathLike | None = None,
    overwrite: bool = False,
    push_to_hub: str | None = None,
    private: bool = False,
) -> Path:
    """Write `source`'s MEGA model to `output_dir` as a self-contained folder (module docstring), atomically;
    with `push_to_hub` ("owner/name") also upload it there. `tokenizer` defaults to the source's own.

    Raises:
        BuildError: a bad source or tokenizer, or `output_dir` not empty without `overwrite`.
    """
    from .builder.loading import load_tokenizer
    from .builder.save import write_atomically

    checkpoint = load_mega_checkpoint(source)
    model, origin = checkpoint.model, checkpoint.source
    text, tokenizer_origin = load_tokenizer(
        tokenizer if tokenizer is not None else source, default_from=None if tokenizer is not None else "model"
    )
    if len(text) > model.config.vocab_size:
        raise BuildError(
            f"tokenizer {tokenizer_origin.name!r} has {len(text)} tokens but the model's vocabulary has "
            f"{model.config.vocab_size} rows: pass the tokenizer the model was trained with (--tokenizer)"
        )

    def write(folder: Path) -> None:
        model.save_pretrained(folder)  # weights (safetensors), config.json with auto_map, the MEGA code
        text.save_pretrained(folder)
        card = render_export_card(checkpoint, tokenizer_origin, repo_id=push_to_hub)
        (folder / "README.md").write_text(card)

    target = write_atomically(output_dir, write, overwrite)
    logger.info("exported %s from %s to %s", checkpoint.what, origin.describe(), target)
    if push_to_hub:
        upload_folder(target, push_to_hub, private=private, source=origin)
    return target


def upload_folder(folder: Path, repo_id: str, *, private: bool = False, source: Source | None = None) -> str:
    """Upload `folder` to the Hub model repository `repo_id` (created if missing). Returns the repository URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    where = f" from {source.describe()}" if source is not None else ""
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo.repo_id,
        repo_type="model",
        commit_message=f"MEGA model exported by mega2bart{where}",
    )
    logger.info("uploaded %s to %s", folder, repo.url)
    return str(repo.url)


def render_export_card(checkpoint: MegaCheckpoint, tokenizer_origin: Source, *, repo_id: str | None = None) -> str:
    """The exported folder's README.md: YAML front matter, where the weights came from, the architecture, and
    how to load and fine-tune it with and without mega2bart."""
    from . import __version__

    model, origin, what, built_from = checkpoint
    config = model.config
    name = repo_id or "PATH"
    head = "AutoModelForMaskedLM" if type(model).__name__ == "MegaForMaskedLM" else "AutoModel"
    parameters = sum(p.numel() for p in model.parameters())
    front = ["---", "library_name: transformers", "tags:", "- mega", "- mega2bart", "- custom_code", "- long-context"]
    if head == "AutoModelForMaskedLM":
        front.append("pipeline_tag: fill-mask")
    base = [source.name for source in (origin, built_from) if source is not None and source.kind == "hub"]
    if base:
        front += ["base_model:", f"- {base[0]}"]
    front.append("---")
    lines = [
        *front,
        "",
        f"# MEGA {'encoder' if not config.is_decoder else 'decoder'} (`{type(model).__name__}`)",
        "",
        f"{what[0].upper() + what[1:]} from {origin.describe(markdown=True)}, exported by `mega2bart export` "
        f"(mega2bart {__version__}) as weights in safetensors, the tokenizer (from "
        f"{tokenizer_origin.describe(markdown=True)}) and the MEGA code, so that it loads on transformers 5 "
        "(which removed MEGA) with `trust_remote_code=True` and no mega2bart.",
        "",
        *(
            [f"The mega2bart model's encoder was built from {built_from.describe(markdown=True)}.", ""]
            if built_from
            else []
        ),
        "| | |",
        "|---|---|",
        f"| parameters | {parameters:,} |",
        f"| layers / width | {config.num_hidden_layers} / {config.hidden_size} |",
        f"| attention chunk | {config.chunk_size if config.use_chunking else 'none (full attention)'} |",
        f"| positions | {config.max_positions:,} |",
        f"| vocabulary | {config.vocab_size:,} rows |",
        "",
        "## Load",
        "",
        "```python",
        f"from transformers import {head}, AutoTokenizer",
        "",
        f'model = {head}.from_pretrained("{name}", trust_remote_code=True)',
        f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
        "```",
        "",
        "`config.json`'s `auto_map` names every MEGA class, so `AutoModelForSequenceClassification`, "
        "`AutoModelForTokenClassification`, `AutoModelForQuestionAnswering`, `AutoModelForMultipleChoice`, "
        "`AutoModelForMaskedLM` and `AutoModelForCausalLM` load it too (a new task head starts random), and every "
        "folder they save carries the code again. With mega2bart installed, `import mega2bart` registers MEGA "
        "and `trust_remote_code` is not needed.",
        "",
        "## Fine-tune",
        "",
        "transformers' example scripts take it as it is, e.g.",
        "",
        "```bash",
        f"python run_glue.py --model_name_or_path {name} --trust_remote_code --task_name mrpc "
        "--do_train --do_eval --output_dir out",
        "```",
        "",
        "Inputs of any length work (padded to a multiple of the attention chunk inside).",
        "",
    ]
    return "\n".join(lines)


__all__ = ["MegaCheckpoint", "export_mega", "load_mega_checkpoint", "render_export_card", "upload_folder"]
