"""Settings declared once: every TrainConfig/PretrainConfig field carries its help, its CLI option (or
is listed under --set), its range and how it reaches TrainingArguments; the shared loader's checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import typer
from transformers import Seq2SeqTrainingArguments, TrainingArguments
from typer.testing import CliRunner

import mega2bart.pretraining
import mega2bart.training
from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.config_types import RunConfig, field_help, setting
from mega2bart.pretraining import PretrainConfig
from mega2bart.training import TrainConfig

CONFIGS = [("train", TrainConfig), ("pretrain", PretrainConfig)]
runner = CliRunner()


def _options(command: str) -> dict[str, object]:
    """{python name: click parameter} of a command of the typer app."""
    return {param.name: param for param in typer.main.get_command(app).commands[command].params}


@pytest.mark.parametrize("command, config_class", CONFIGS)
def test_every_field_has_help_and_an_option_or_is_listed_under_set(command, config_class):
    options = _options(command)
    set_help = options["set_"].help
    for field in dataclasses.fields(config_class):
        help_text = field_help(field)  # raises for a field declared without help
        if field.metadata.get("flag"):
            assert options[field.name].help == help_text, f"--{field.name}: the help is not the field's"
        else:
            assert field.name not in options and f" {field.name}," in set_help.replace(".", ","), (
                f"{config_class.__name__}.{field.name} has no flag and is not listed in the --set help"
            )


@pytest.mark.parametrize("command, config_class", CONFIGS)
def test_options_show_the_field_defaults_and_keep_their_flag_names(command, config_class):
    options = _options(command)
    assert options["per_device_train_batch_size"].opts == ["--batch-size"]
    assert options["max_steps"].show_default == str(config_class.__dataclass_fields__["max_steps"].default)
    assert all(options[name].default is None for name in ("config", "max_steps", "seed"))  # unset: YAML or default
    if command == "train":
        assert options["resume_from_checkpoint"].opts == ["--resume"]
        assert options["streaming"].secondary_opts == ["--no-streaming"]
    else:
        assert options["text_files"].multiple and options["resume"].secondary_opts == ["--no-resume"]


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Runs `train`/`pretrain` up to the library call and keeps the config it received."""
    seen: dict[str, RunConfig] = {}

    def fake_train(config, overwrite=False, quiet=False):
        seen["config"] = config
        return {"log_history": [], "run": {"global_step": 0}}

    def fake_pretrain(config):
        seen["config"] = config
        (tmp_path / "metrics.json").write_text(json.dumps({"phases": []}))
        return tmp_path / "final"

    monkeypatch.setattr(mega2bart.training, "train", fake_train)
    monkeypatch.setattr(mega2bart.pretraining, "run_pretraining", fake_pretrain)
    return seen


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"


def test_train_flags_aliases_and_choices_reach_the_fields(captured):
    _invoke(
        "train",
        "--model",
        "m",
        "--batch-size",
        "3",
        "--eval-split",
        "None",
        "--resume",
        "NONE",
        "--bf16",
        "True",
        "--no-gradient-checkpointing",
        "--learning-rate",
        "1e-3",
        "--quiet",
    )
    config = captured["config"]
    assert (config.per_device_train_batch_size, config.eval_split, config.resume_from_checkpoint) == (3, None, None)
    assert (config.bf16, config.gradient_checkpointing, config.learning_rate) == (True, False, 1e-3)
    _invoke("train", "--model", "m", "--eval-split", "test", "--resume", "runs/x/checkpoint-2", "--bf16", "auto")
    config = captured["config"]
    assert (config.eval_split, config.resume_from_checkpoint, config.bf16) == ("test", "runs/x/checkpoint-2", "auto")


def test_yaml_then_flags_then_set(captured, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: m\nmax_steps: 5\nseed: 1\nlogging_steps: 2\n")
    _invoke("train", "--config", str(path), "--max-steps", "7", "--seed", "2", "--set", "seed=3")
    config = captured["config"]
    assert (config.model, config.max_steps, config.seed, config.logging_steps) == ("m", 7, 3, 2)


def test_pretrain_flags_and_set(captured):
    _invoke(
        "pretrain",
        "--encoder",
        "tiny",
        "--text-files",
        "a.txt",
        "--text-files",
        "b",
        "--batch-size",
        "2",
        "--resume",
        "--set",
        "warmup_steps=4",
        "--set",
        "dataset_split=validation",
    )
    config = captured["config"]
    assert (config.text_files, config.per_device_train_batch_size, config.resume) == (["a.txt", "b"], 2, True)
    assert (config.warmup_steps, config.dataset_split, config.dataset) == (4, "validation", None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "m", "--set", "max_step=3"], "unknown TrainConfig field(s) ['max_step']"),
        (
            ["pretrain", "--encoder", "tiny", "--dataset", "aclsum", "--set", "mask_rate=0.3"],
            "unknown PretrainConfig field(s) ['mask_rate']",
        ),
        (["pretrain", "--encoder", "tiny", "--set", "text_files"], "--set expects KEY=VALUE (a PretrainConfig field)"),
        (
            ["train", "--model", "m", "--batch-size", "0"],
            "`per_device_train_batch_size` (0) must be a positive integer",
        ),
        (
            ["pretrain", "--encoder", "tiny", "--dataset", "aclsum", "--learning-rate", "0"],
            "`learning_rate` (0.0) must be > 0",
        ),
        (["pretrain", "--dataset", "aclsum"], 'pass --encoder (a MEGA checkpoint directory, a Hub id or "tiny")'),
    ],
)
def test_command_line_errors_name_the_setting(args, message, captured):
    result = runner.invoke(app, args)
    assert result.exit_code == ERROR_EXIT_CODE and message in result.output, result.output
    assert "config" not in captured


def test_yaml_without_a_required_field_names_it(tmp_path, captured):
    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 5\n")
    with pytest.raises(ValueError, match=r"run.yaml: no value for the required TrainConfig field\(s\) \['model'\]"):
        TrainConfig.from_yaml(path)
    result = runner.invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == ERROR_EXIT_CODE and "['model']" in result.output, result.output


@pytest.mark.parametrize(
    "config, message",
    [
        (
            lambda: TrainConfig(model="m", save_total_limit=0),
            "`save_total_limit` (0) must be a positive integer or None",
        ),
        (lambda: TrainConfig(model="m", weight_decay=-1), "`weight_decay` (-1) must be >= 0 (0: no weight decay)"),
        (lambda: PretrainConfig(encoder="tiny", dataset="d", warmup_steps=-2), "`warmup_steps` (-2) must be >= 0"),
        (
            lambda: PretrainConfig(encoder="tiny", dataset="d", max_documents=0),
            "`max_documents` (0) must be a positive",
        ),
    ],
)
def test_ranges_come_from_the_field(config, message):
    with pytest.raises(ValueError) as caught:
        config()
    assert str(caught.value).startswith(message), str(caught.value)


# ----------------------------------------------------------------------------- TrainingArguments


def test_fields_reach_training_arguments_under_their_names(tmp_path):
    targets = TrainConfig.training_arg_targets(Seq2SeqTrainingArguments)
    assert targets["label_smoothing"] == "label_smoothing_factor"
    assert targets["gradient_checkpointing"] == "activation_checkpointing"
    assert targets["model"] is None and targets["resume_from_checkpoint"] is None  # mega2bart's own
    config = TrainConfig(
        model="m",
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        label_smoothing=0.2,
        seed=7,
        save_total_limit=None,
        gradient_checkpointing=False,
        run_name="r",
    )
    args = config.to_training_arguments()
    for name, target in targets.items():
        if target is not None and name != "report_to":  # TrainingArguments turns "none" into []
            assert getattr(args, target) == getattr(config, name), name
    phase = PretrainConfig(encoder="tiny", dataset="d", weight_decay=0.0, logging_steps=3).to_training_arguments(
        tmp_path / "phase", steps=4
    )
    assert (phase.output_dir, phase.max_steps, phase.weight_decay, phase.logging_steps) == (
        str(tmp_path / "phase"),
        4,
        0.0,
        3,
    )


def test_a_misspelled_or_unmarked_training_field_fails_loudly():
    @dataclasses.dataclass
    class Misspelled(RunConfig):
        output_dir: str = setting("out", training_arg=True, help="Where.")
        per_device_train_batchsize: int = setting(1, training_arg=True, help="Typo of per_device_train_batch_size.")

    with pytest.raises(
        ValueError,
        match=r"Misspelled.per_device_train_batchsize .* \(did you mean "
        r"'per_device_train_batch_size'\?\)",
    ):
        Misspelled().training_arguments_kwargs(TrainingArguments)

    @dataclasses.dataclass
    class Renamed(RunConfig):
        output_dir: str = setting("out", training_arg=True, help="Where.")
        smoothing: float = setting(0.0, training_arg="label_smothing_factor", help="Typo in the target.")

    with pytest.raises(ValueError, match="'label_smothing_factor', which is not one of its fields"):
        Renamed.training_arg_targets(Seq2SeqTrainingArguments)

    @dataclasses.dataclass
    class Unmarked(RunConfig):
        output_dir: str = setting("out", help="Where; named like a TrainingArguments field, no training_arg.")

    with pytest.raises(ValueError, match=r"Unmarked.output_dir has the name of a TrainingArguments field"):
        Unmarked.training_arg_targets(TrainingArguments)


def test_a_field_without_help_is_refused():
    @dataclasses.dataclass
    class Undocumented(RunConfig):
        output_dir: str = "out"

    with pytest.raises(ValueError, match="'output_dir' has no help"):
        field_help(dataclasses.fields(Undocumented)[0])


def test_save_and_load_round_trip(tmp_path: Path):
    config = PretrainConfig(encoder="tiny", text_files=["a.txt"], output_dir=str(tmp_path), seed=3)
    saved = config.save()
    assert saved == tmp_path / "pretrain_config.yaml"
    assert PretrainConfig.load(saved) == config
