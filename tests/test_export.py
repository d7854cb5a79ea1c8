"""`mega2bart export`: a MEGA checkpoint (Hub id, 4.x-format folder, a built model's encoder) -> a folder that
loads with trust_remote_code alone (issue 30). The loads without mega2bart are in test_remote_code.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import pytest
import torch
from mega_tiny import assert_self_contained, tiny_config
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM
from typer.testing import CliRunner

import mega2bart  # noqa: F401  (registers MEGA)
from mega2bart.builder import BuildError
from mega2bart.cli import app
from mega2bart.export import export_mega
from mega2bart.models.mega import MegaForMaskedLM, MegaModel

runner = CliRunner()
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def _same_weights(model: torch.nn.Module, folder: Path) -> None:
    saved = load_file(str(folder / "model.safetensors"))
    state = model.state_dict()
    for key, value in saved.items():
        assert torch.equal(value, state[key]), key


def test_export_of_a_built_models_encoder(tiny_mega2bart_dir: Path, tmp_path: Path) -> None:
    from mega2bart.builder import load_mega2bart

    out = export_mega(tiny_mega2bart_dir, tmp_path / "encoder")
    assert_self_contained(out)
    assert all((out / name).is_file() for name in TOKENIZER_FILES)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MegaModel"] and config["use_pooler"] is False
    model, _ = load_mega2bart(tiny_mega2bart_dir)
    _same_weights(model.get_encoder(), out)
    assert len(load_file(str(out / "model.safetensors"))) == len(model.get_encoder().state_dict())
    card = (out / "README.md").read_text()
    assert "the encoder of a mega2bart model" in card.lower() and str(tiny_mega2bart_dir.resolve()) in card
    assert 'AutoModel.from_pretrained("PATH", trust_remote_code=True)' in card
    # the build record's encoder source (conftest builds from the tiny MEGA folder)
    assert "The mega2bart model's encoder was built from local directory `" in card and "tiny_mega_encoder" in card
    assert type(AutoModel.from_pretrained(out)) is MegaModel


def _as_4x_folder(source: Path, target: Path) -> Path:
    """`source` (a MegaForMaskedLM folder) rewritten as the 4.x port saved the seed: weights in pytorch_model.bin
    (tied MLM head included), config.json with no auto_map, no code files."""
    target.mkdir()
    config = json.loads((source / "config.json").read_text())
    config.pop("auto_map")
    config["transformers_version"] = "4.38.2"
    (target / "config.json").write_text(json.dumps(config))
    state = MegaForMaskedLM.from_pretrained(source).state_dict()
    torch.save(state, target / "pytorch_model.bin")
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, target / name)
    return target


def test_export_of_a_4x_format_folder(tiny_mega_encoder_dir: Path, tmp_path: Path) -> None:
    legacy = _as_4x_folder(tiny_mega_encoder_dir, tmp_path / "legacy")
    out = export_mega(legacy, tmp_path / "exported")
    assert_self_contained(out)
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model) is MegaForMaskedLM
    reference = MegaForMaskedLM.from_pretrained(tiny_mega_encoder_dir)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
    card = (out / "README.md").read_text()
    assert "pipeline_tag: fill-mask" in card and 'AutoModelForMaskedLM.from_pretrained("PATH"' in card


def test_push_to_hub_uploads_the_finished_folder(tiny_mega_encoder_dir: Path, tmp_path: Path) -> None:
    uploaded: dict[str, list[str]] = {}

    def upload_folder(folder_path: str, repo_id: str, **kwargs) -> None:
        uploaded[repo_id] = sorted(p.name for p in Path(folder_path).iterdir())

    with mock.patch("huggingface_hub.HfApi") as api:
        api.return_value.create_repo.return_value = mock.Mock(repo_id="someone/mega", url="https://hf.co/someone/mega")
        api.return_value.upload_folder.side_effect = upload_folder
        out = export_mega(tiny_mega_encoder_dir, tmp_path / "out", push_to_hub="someone/mega", private=True)
    api.return_value.create_repo.assert_called_once_with("someone/mega", private=True, exist_ok=True, repo_type="model")
    assert uploaded["someone/mega"] == sorted(p.name for p in out.iterdir())
    assert {"model.safetensors", "modeling_mega.py", "configuration_mega.py", "README.md"} <= set(
        uploaded["someone/mega"]
    )
    assert 'from_pretrained("someone/mega", trust_remote_code=True)' in (out / "README.md").read_text()


def test_cli_export_and_its_errors(tiny_mega_encoder_dir: Path, tiny_bart_decoder_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tiny_mega_encoder_dir), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert f"saved {tmp_path / 'out'}" in result.output
    assert_self_contained(tmp_path / "out")

    no_tokenizer = tmp_path / "no_tokenizer"
    MegaModel.from_pretrained(tiny_mega_encoder_dir).save_pretrained(no_tokenizer)
    cases = [
        ([str(tiny_mega_encoder_dir), str(tmp_path / "out")], "is not empty"),
        ([str(tiny_bart_decoder_dir), str(tmp_path / "bart")], "is a 'bart' model"),
        ([str(tmp_path / "missing"), str(tmp_path / "x")], "neither an existing directory nor a Hugging Face Hub id"),
        ([str(no_tokenizer), str(tmp_path / "y")], "--tokenizer"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    with pytest.raises(BuildError, match="tokenizer .* has 50265 tokens but the model's vocabulary has 128 rows"):
        small = tmp_path / "small"
        MegaModel(tiny_config()).save_pretrained(small)
        export_mega(small, tmp_path / "z", tokenizer=str(tiny_mega_encoder_dir))


@pytest.mark.slow
def test_export_of_the_seed_checkpoint(tmp_path: Path) -> None:
    """Needs the Hub (HF_HUB_OFFLINE=0): the seed, a 4.x checkpoint with no auto_map, becomes a folder that loads
    with trust_remote_code; its MLM head fills a mask."""
    from transformers import pipeline

    from mega2bart.presets import DEFAULT_ENCODER

    out = export_mega(DEFAULT_ENCODER, tmp_path / "seed")
    assert_self_contained(out)
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MegaForMaskedLM"] and config["vocab_size"] == 50304
    assert f"base_model:\n- {DEFAULT_ENCODER}" in (out / "README.md").read_text()
    filler = pipeline("fill-mask", model=str(out))
    assert len(filler("The capital of France is <mask>.")) == 5
