"""Every MEGA folder mega2bart writes loads, fine-tunes and saves where mega2bart cannot be imported (issue 30).

The fine-tuning runs in one subprocess (remote_finetune_worker.py through example_script_runner.py: `python -I -S`
with a meta-path finder that refuses "mega2bart"), on three folders: a `MegaForMaskedLM.save_pretrained` folder, `mega2bart export` of a built
model, and a built model's encoder saved with `get_encoder().save_pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import transformers
from mega_tiny import assert_self_contained, run_without_mega2bart, tiny_config

from mega2bart.models.mega import MEGA_AUTO_CLASSES

HEADS = ["sentence", "pair", "token", "qa", "choice", "mlm"]
JOBS = (
    [("mlm", head) for head in HEADS]
    + [("export", head) for head in HEADS]
    + [("encoder", h) for h in ("bare", "choice")]
)
AUTO_CLASS = {"sentence": "AutoModelForSequenceClassification", "pair": "AutoModelForSequenceClassification"} | {
    "token": "AutoModelForTokenClassification",
    "qa": "AutoModelForQuestionAnswering",
    "choice": "AutoModelForMultipleChoice",
    "mlm": "AutoModelForMaskedLM",
    "bare": "AutoModel",
}


@pytest.fixture(scope="module")
def finetuned(mega_folders: dict[str, Path], tmp_path_factory) -> dict:
    """The worker's results: one entry per (folder, head) job, plus what it proved about importing mega2bart."""
    work = tmp_path_factory.mktemp("finetune")
    spec = {
        "work": str(work),
        "results": str(work / "results.json"),
        "jobs": [{"name": f"{f}-{h}", "folder": str(mega_folders[f]), "head": h} for f, h in JOBS],
    }
    (work / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "HF_MODULES_CACHE": str(work / "modules"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    worker = Path(__file__).with_name("remote_finetune_worker.py")
    done = run_without_mega2bart(work / "report.json", worker, [str(work / "spec.json")], work, env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the jobs' results and what the runner proved about importing mega2bart
    return json.loads((work / "results.json").read_text()) | json.loads((work / "report.json").read_text())


def test_the_worker_cannot_import_mega2bart(finetuned: dict) -> None:
    assert finetuned["import_error"] and "mega2bart" in finetuned["import_error"], finetuned["import_error"]
    assert finetuned["mega2bart_modules"] == [] and finetuned["modules_from_the_package_folder"] == []


@pytest.mark.parametrize(("folder", "head"), JOBS, ids=[f"{f}-{h}" for f, h in JOBS])
def test_head_fine_tunes_saves_and_reloads_without_mega2bart(
    finetuned: dict, mega_folders: dict[str, Path], folder: str, head: str
) -> None:
    """AutoModelFor* with trust_remote_code, the Trainer, save_model, reload: the shipped code's classes
    throughout, the weights changed, the output folder self-contained, the reloaded outputs the same; and the
    output loads with mega2bart (no remote code) to the same outputs."""
    result = finetuned["jobs"][f"{folder}-{head}"]
    assert "error" not in result, result.get("error")
    for key in ("class", "reloaded_class", "config"):
        assert result[key].startswith("transformers_modules."), (key, result[key])
    auto_name = AUTO_CLASS[head]
    assert result["class"].endswith("." + MEGA_AUTO_CLASSES[auto_name].__name__)
    if head != "bare":
        assert result["train_loss"] > 0 and result["changed"] > result["tensors"] // 2, result
    assert result["reload_max_diff"] <= 1e-6
    out_dir = Path(result["output_dir"])
    assert_self_contained(out_dir)
    assert_self_contained(mega_folders[folder])

    local = getattr(transformers, auto_name).from_pretrained(out_dir).eval()
    assert type(local) is MEGA_AUTO_CLASSES[auto_name]  # mega2bart's own class here
    inputs = {key: torch.tensor(value) for key, value in result["inputs"].items()}
    with torch.no_grad():
        out = local(**inputs)
    got = {"qa": lambda: torch.stack([out.start_logits, out.end_logits], -1), "bare": lambda: out.last_hidden_state}
    actual = got.get(head, lambda: out.logits[..., :50])()
    torch.testing.assert_close(actual, torch.tensor(result["outputs"]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("auto_name", list(MEGA_AUTO_CLASSES))
def test_every_mega_class_saves_a_self_contained_folder(auto_name: str, tmp_path: Path) -> None:
    """save_pretrained of each MEGA class writes the code and the full auto_map, and leaves the model's config
    as it was (no auto_map added in memory)."""
    cls = MEGA_AUTO_CLASSES[auto_name]
    causal = auto_name == "AutoModelForCausalLM"
    model = cls(tiny_config(is_decoder=causal, bidirectional=not causal))
    model.save_pretrained(tmp_path)
    assert_self_contained(tmp_path)
    assert "auto_map" not in model.config.to_dict()
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls.__name__]


def test_a_built_models_encoder_saved_alone_names_only_files_it_has(tiny_mega2bart_dir: Path, tmp_path: Path) -> None:
    """The joined model's encoder sub-config carries an auto_map (it points at the MEGA files of the joined
    folder); the encoder saved on its own must carry the files it names."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mega2bart_dir)
    joined_auto_map = model.config.encoder.auto_map
    model.get_encoder().save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    for name in auto_map.values():
        assert (tmp_path / f"{name.split('.')[0]}.py").is_file(), name
    assert_self_contained(tmp_path)
    assert model.config.encoder.auto_map == joined_auto_map
