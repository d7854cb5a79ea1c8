"""The remote code shipped in every saved mega2bart (encoder-decoder) directory, so that
`AutoModelForSeq2SeqLM.from_pretrained(dir, trust_remote_code=True)` works without mega2bart installed.
(A MEGA model saved on its own ships its two files itself: `MegaPreTrainedModel.save_pretrained`.)

Three files are copied unchanged: `configuration_mega.py` and `modeling_mega.py` (from
`mega2bart/models/mega/`) and `modeling_mega2bart.py` (the EncoderDecoder glue). `config.json` gets an
`auto_map` pointing at the glue, and its encoder sub-config one pointing at the MEGA files.

Why no file needs editing: transformers copies a remote-code file together with the sibling files it
imports relatively (`from .configuration_mega import ...`; `dynamic_module_utils.get_relative_imports`).
The glue registers "mega" with the Auto classes only when "mega" is not registered yet, and only then
imports the sibling MEGA files. Inside the package `import mega2bart` has registered "mega" before any
submodule runs, so those imports (of files that exist only in a saved directory) never execute there;
in a saved directory loaded without mega2bart they do, and the encoder sub-config and model resolve to
the shipped MEGA classes.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..models.mega import MEGA_AUTO_MAP

_PACKAGE = Path(__file__).resolve().parents[1]
REMOTE_CODE_SOURCES = {
    "configuration_mega.py": _PACKAGE / "models" / "mega" / "configuration_mega.py",
    "modeling_mega.py": _PACKAGE / "models" / "mega" / "modeling_mega.py",
    "modeling_mega2bart.py": _PACKAGE / "modeling_mega2bart.py",
}
"""Name in the saved directory -> the package file copied there unchanged."""
REMOTE_CODE_FILES = tuple(REMOTE_CODE_SOURCES)
AUTO_MAP = {
    "AutoConfig": "modeling_mega2bart.Mega2BartConfig",
    "AutoModelForSeq2SeqLM": "modeling_mega2bart.Mega2BartModel",
}
ENCODER_AUTO_MAP = dict(MEGA_AUTO_MAP)
"""The encoder sub-config's `auto_map`: the one every saved MEGA folder gets, so that the encoder saved on its own
(`get_encoder().save_pretrained`, which writes the MEGA files beside it) names files it has."""


def write_remote_code(directory: str | os.PathLike) -> None:
    """Copy the MEGA files + the EncoderDecoder glue into `directory`, and point `auto_map` at them in config.json."""
    directory = Path(directory)
    for name, source in REMOTE_CODE_SOURCES.items():
        shutil.copyfile(source, directory / name)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config["auto_map"] = dict(AUTO_MAP)
    if config.get("encoder", {}).get("model_type") == "mega":
        config["encoder"]["auto_map"] = dict(ENCODER_AUTO_MAP)
    staged = config_path.with_name(config_path.name + ".tmp")  # a crash must not leave half a config.json
    staged.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(staged, config_path)


def has_remote_code(directory: str | os.PathLike) -> bool:
    """True when every remote-code file is in `directory`."""
    return all((Path(directory) / name).is_file() for name in REMOTE_CODE_FILES)


__all__ = ["REMOTE_CODE_FILES", "has_remote_code", "write_remote_code"]
