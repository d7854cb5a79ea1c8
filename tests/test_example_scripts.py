"""transformers' own encoder example scripts, unchanged, fine-tune every MEGA folder mega2bart writes (issue 30).

Opt-in and slow: set TRANSFORMERS_EXAMPLES to a directory holding transformers' `examples/pytorch` tree (a
checkout of transformers, or the tree itself) and run `pytest -m slow tests/test_example_scripts.py`. The scripts
are not part of this repository; the test runs them from that directory. It needs `evaluate` (`pip install
evaluate`), which the scripts import.

run_glue.py, run_ner.py, run_swag.py, run_qa.py (with its utils_qa.py and trainer_qa.py) and run_mlm.py each run
with `--trust_remote_code`, `--do_train --do_eval` (and `--do_predict` where the script has it) for a few steps, on
tiny local data files written here, in a `python -I -S` process where `import mega2bart` fails
(example_script_runner.py), on the three MEGA folders of the `mega_folders` fixture. The outputs are then reloaded
in another such process (example_outputs_reload.py), which recomputes what each script saved, and here with
mega2bart's own classes.

What stands in for the Hub: the scripts call `evaluate.load("accuracy")`, `evaluate.load("seqeval")` and
`evaluate.load("squad")`, which fetch code from the Hub; evaluate first looks for `NAME/NAME.py` under the current
directory, so the scripts run from a copy of tests/fixtures/hub_metrics, this repository's own implementations of
those three metrics (see its README). run_swag computes its accuracy itself. Nothing else is fetched
(HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1; the data are local JSON and text files).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers
from mega_tiny import assert_self_contained, run_without_mega2bart
from safetensors.torch import load_file

from mega2bart.models.mega import MEGA_AUTO_CLASSES

EXAMPLES_VARIABLE = "TRANSFORMERS_EXAMPLES"
HERE = Path(__file__).resolve().parent
SCRIPTS = {
    "run_glue": "text-classification/run_glue.py",
    "run_ner": "token-classification/run_ner.py",
    "run_swag": "multiple-choice/run_swag.py",
    "run_qa": "question-answering/run_qa.py",
    "run_mlm": "language-modeling/run_mlm.py",
}
NEEDED = [*SCRIPTS.values(), "question-answering/utils_qa.py", "question-answering/trainer_qa.py"]
AUTO_CLASS = {
    "run_glue": "AutoModelForSequenceClassification",
    "run_ner": "AutoModelForTokenClassification",
    "run_swag": "AutoModelForMultipleChoice",
    "run_qa": "AutoModelForQuestionAnswering",
    "run_mlm": "AutoModelForMaskedLM",
}
# the test id of each folder of the `mega_folders` fixture (so `-k export` picks one folder's five scripts)
FOLDERS = {"MegaForMaskedLM": "mlm", "export": "export", "encoder": "encoder"}
LENGTH = {"run_glue": 32, "run_ner": 32, "run_swag": 32, "run_qa": 32, "run_mlm": 16}
DOC_STRIDE = 8
# the metric each script reports after --do_eval, and its range
EVAL_METRIC = {
    "run_glue": ("eval_accuracy", 1),
    "run_ner": ("eval_f1", 1),
    "run_swag": ("eval_accuracy", 1),
    "run_qa": ("eval_f1", 100),
    "run_mlm": ("eval_accuracy", 1),
}
TEXTS = [
    "a good film with a fine cast",
    "a bad film, dull and long",
    "good acting and a clever plot",
    "bad acting, a plot full of holes",
    "the best thing I saw this year",
    "the worst evening in a long time",
    "fine music and a good ending",
    "a long, bad and boring story",
]
ADJECTIVES = {"good", "bad", "fine", "best", "worst", "clever", "long", "boring", "dull"}


def _examples_tree() -> tuple[Path | None, str]:
    """transformers' examples/pytorch under $TRANSFORMERS_EXAMPLES, or None and why not."""
    value = os.environ.get(EXAMPLES_VARIABLE, "").strip()
    if not value:
        return None, f"set {EXAMPLES_VARIABLE} to a directory holding transformers' examples/pytorch tree"
    for tree in (Path(value) / "examples" / "pytorch", Path(value)):
        if (tree / SCRIPTS["run_glue"]).is_file():
            missing = [name for name in NEEDED if not (tree / name).is_file()]
            return (None, f"{EXAMPLES_VARIABLE}={value}: {tree} lacks {', '.join(missing)}") if missing else (tree, "")
    return None, f"{EXAMPLES_VARIABLE}={value} holds no examples/pytorch/{SCRIPTS['run_glue']}"


EXAMPLES, SKIP_REASON = _examples_tree()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(EXAMPLES is None, reason=SKIP_REASON)]


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def write_data(folder: Path) -> dict[str, str]:
    """Tiny train/eval files in the formats the scripts read: label/sentence(s) for run_glue, tokens/ner_tags
    (IOB2 strings) for run_ner, SWAG's sent1/sent2/ending0-3/label for run_swag, SQuAD's {"data": [...]} for
    run_qa, one text per line for run_mlm."""
    folder.mkdir(parents=True)
    labels = [1 - index % 2 for index in range(len(TEXTS))]
    words = [text.replace(",", "").split() for text in TEXTS]
    qa = []
    for index, text in enumerate(TEXTS):
        answer = text.split()[1].rstrip(",")
        qa.append(
            {
                "id": str(index),
                "title": "films",
                "context": text,
                "question": "which word comes second?",
                "answers": {"text": [answer], "answer_start": [text.index(answer)]},
            }
        )
    (folder / "qa.json").write_text(json.dumps({"data": qa}))
    (folder / "mlm.txt").write_text("\n".join(TEXTS) + "\n")
    shifted = [TEXTS[(index + 1) % len(TEXTS)] for index in range(len(TEXTS))]
    return {
        "sentence": _write_jsonl(
            folder / "sentence.json", [{"sentence": t, "label": y} for t, y in zip(TEXTS, labels, strict=True)]
        ),
        "pair": _write_jsonl(
            folder / "pair.json",
            [{"sentence1": t, "sentence2": s, "label": y} for t, s, y in zip(TEXTS, shifted, labels, strict=True)],
        ),
        "ner": _write_jsonl(
            folder / "ner.json",
            [{"tokens": w, "ner_tags": ["B-ADJ" if x in ADJECTIVES else "O" for x in w]} for w in words],
        ),
        "swag": _write_jsonl(
            folder / "swag.json",
            [
                {"sent1": "the film was", "sent2": "it was"}
                | {f"ending{k}": TEXTS[(index + k) % len(TEXTS)] for k in range(4)}
                | {"label": index % 4}
                for index in range(len(TEXTS))
            ],
        ),
        "qa": str(folder / "qa.json"),
        "mlm": str(folder / "mlm.txt"),
    }


def script_args(script: str, model_dir: Path, data: str, output_dir: Path) -> list[str]:
    args = ["--model_name_or_path", str(model_dir), "--trust_remote_code", "--output_dir", str(output_dir)]
    args += ["--do_train", "--do_eval", "--max_steps", "3", "--per_device_train_batch_size", "4"]
    args += ["--learning_rate", "5e-3", "--save_strategy", "no", "--report_to", "none", "--use_cpu"]
    args += ["--seed", "0", "--disable_tqdm", "true", "--max_seq_length", str(LENGTH[script])]
    args += ["--train_file", data, "--validation_file", data]
    if script in ("run_glue", "run_ner", "run_qa"):
        args += ["--test_file", data, "--do_predict"]
    return args + {
        "run_swag": ["--pad_to_max_length"],
        "run_qa": ["--doc_stride", str(DOC_STRIDE)],
        "run_mlm": ["--line_by_line"],
    }.get(script, [])


@pytest.fixture(scope="module", params=list(FOLDERS), ids=list(FOLDERS))
def runs(request, mega_folders: dict[str, Path], tmp_path_factory) -> dict:
    """The five scripts on one MEGA folder, then one process reloading their outputs; everything measured."""
    pytest.importorskip("evaluate", reason="transformers' example scripts import evaluate: pip install evaluate")
    model_dir = mega_folders[FOLDERS[request.param]]
    work = tmp_path_factory.mktemp(f"examples-{request.param}")
    cwd = work / "cwd"
    shutil.copytree(HERE / "fixtures" / "hub_metrics", cwd)  # evaluate.load("NAME") finds cwd/NAME/NAME.py
    data = write_data(work / "data")
    data["glue"] = data["sentence"] if request.param == "MegaForMaskedLM" else data["pair"]
    env = {**os.environ, "HF_HOME": str(work / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("PYTHONPATH", None)
    scripts, jobs = {}, []
    for script, path in SCRIPTS.items():
        output_dir, report = work / script, work / f"{script}-report.json"
        task_data = data[script.removeprefix("run_")]
        done = run_without_mega2bart(
            report, EXAMPLES / path, script_args(script, model_dir, task_data, output_dir), cwd, env
        )
        eval_file = output_dir / "eval_results.json"
        scripts[script] = {
            "returncode": done.returncode,
            "log": (done.stdout + done.stderr)[-4000:],
            "report": json.loads(report.read_text()) if report.is_file() else None,
            "output_dir": output_dir,
            "eval": json.loads(eval_file.read_text()) if eval_file.is_file() else None,
        }
        if done.returncode == 0:
            name = script.removeprefix("run_")
            jobs.append({"name": script, "script": name, "output_dir": str(output_dir), "data": task_data})
            jobs[-1] |= {"length": LENGTH[script], "doc_stride": DOC_STRIDE}
    spec = {"results": str(work / "reload.json"), "jobs": jobs}
    (work / "reload-spec.json").write_text(json.dumps(spec))
    report = work / "reload-report.json"
    done = run_without_mega2bart(report, HERE / "example_outputs_reload.py", [str(work / "reload-spec.json")], cwd, env)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = json.loads((work / "reload.json").read_text())
    return {
        "folder": request.param,
        "model_dir": model_dir,
        "scripts": scripts,
        "reload": reloaded,
        "reload_report": json.loads(report.read_text()),
    }


def _no_mega2bart(report: dict) -> None:
    assert report["import_error"] and "mega2bart" in report["import_error"], report
    assert report["mega2bart_modules"] == [] and report["modules_from_the_package_folder"] == [], report
    assert report["mega_classes"], "the MEGA code came from no remote-code module"


def _changed(before_dir: Path, after_dir: Path) -> tuple[int, int]:
    """(changed, shared): tensors of the input folder's encoder that the script's output holds, and how many
    of them training changed (names compared without the heads' "mega." prefix)."""
    before = {key.removeprefix("mega."): value for key, value in load_file(before_dir / "model.safetensors").items()}
    after = {key.removeprefix("mega."): value for key, value in load_file(after_dir / "model.safetensors").items()}
    shared = [key for key in before if key in after and before[key].shape == after[key].shape]
    return sum(not torch.equal(before[key], after[key]) for key in shared), len(shared)


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_script_trains_evaluates_and_saves_without_mega2bart(runs: dict, script: str) -> None:
    """The unchanged script ran with --trust_remote_code in a process where mega2bart cannot be imported,
    trained (the encoder's weights changed), evaluated, and saved a self-contained folder."""
    run = runs["scripts"][script]
    assert run["returncode"] == 0, run["log"]
    _no_mega2bart(run["report"])
    key, top = EVAL_METRIC[script]
    assert run["eval"] is not None and 0 <= run["eval"][key] <= top, run["eval"]
    shown = {k: v for k, v in run["eval"].items() if k.startswith("eval_") and not k.endswith(("runtime", "second"))}
    print(f"\n{script} on {runs['folder']}: " + ", ".join(f"{k} = {v:.4g}" for k, v in sorted(shown.items())))
    changed, shared = _changed(runs["model_dir"], run["output_dir"])
    assert shared > 20 and changed > shared // 2, (changed, shared)
    assert_self_contained(run["output_dir"])


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_output_reloads_anywhere_and_gives_what_the_script_saved(runs: dict, script: str) -> None:
    """Reloaded with AutoModelFor*(trust_remote_code=True) where mega2bart cannot be imported, the output
    recomputes the script's saved predictions / accuracy / kept logits; loaded here with mega2bart's own class
    (no remote code) it gives the same outputs."""
    result = runs["reload"].get(script)
    assert result is not None, f"{script} did not run: {runs['scripts'][script]['log']}"
    assert "error" not in result, result["error"]
    _no_mega2bart(runs["reload_report"])
    auto_name = AUTO_CLASS[script]
    assert result["class"].startswith("transformers_modules.")
    assert result["class"].endswith("." + MEGA_AUTO_CLASSES[auto_name].__name__)
    if script in ("run_glue", "run_ner"):
        assert result["recomputed"] == result["saved"] and len(result["saved"]) == len(TEXTS), result
    if script == "run_glue":
        assert result["accuracy"] == pytest.approx(runs["scripts"][script]["eval"]["eval_accuracy"])
    if script == "run_swag":
        assert result["recomputed"] == pytest.approx(result["saved"]), result
    if script == "run_qa":
        assert result["answers"] > 0 and result["max_distance"] < 1e-4, result

    local = getattr(transformers, auto_name).from_pretrained(runs["scripts"][script]["output_dir"]).eval()
    assert type(local) is MEGA_AUTO_CLASSES[auto_name]  # mega2bart's own class in this process
    with torch.no_grad():
        out = local(**{key: torch.tensor(value) for key, value in result["inputs"].items()})
    actual = torch.stack([out.start_logits, out.end_logits], -1) if script == "run_qa" else out.logits
    actual = actual[..., :50] if script == "run_mlm" else actual
    torch.testing.assert_close(actual, torch.tensor(result["outputs"]), rtol=0, atol=1e-5)
