"""The local stand-ins for the Hub's accuracy, seqeval and squad metrics (tests/fixtures/hub_metrics), which
test_example_scripts.py gives transformers' example scripts, compute those metrics: hand-worked cases."""

from __future__ import annotations

from pathlib import Path

import pytest

evaluate = pytest.importorskip("evaluate", reason="the stand-ins are evaluate modules: pip install evaluate")
METRICS = Path(__file__).with_name("fixtures") / "hub_metrics"


def load(name: str):
    return evaluate.load(str(METRICS / name / f"{name}.py"))


def test_accuracy() -> None:
    assert load("accuracy").compute(predictions=[1, 0, 2, 2], references=[1, 1, 2, 0]) == {"accuracy": 0.5}


def test_seqeval_counts_exact_entities_and_token_accuracy() -> None:
    # gold: PER 0-1, ORG 3, LOC 5-6; predicted: PER 0-1 (right), LOC 3 (wrong type), LOC 5 and LOC 6 (the
    # gold LOC split in two: neither span matches)
    references = [["B-PER", "I-PER", "O", "B-ORG", "O", "B-LOC", "I-LOC"]]
    predictions = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "B-LOC"]]
    result = load("seqeval").compute(predictions=predictions, references=references)
    assert result["overall_precision"] == pytest.approx(1 / 4)
    assert result["overall_recall"] == pytest.approx(1 / 3)
    assert result["overall_f1"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert result["overall_accuracy"] == pytest.approx(5 / 7)
    assert result["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert result["ORG"]["number"] == 1 and result["ORG"]["recall"] == 0.0
    assert result["LOC"]["precision"] == 0.0 and result["LOC"]["number"] == 1


def test_seqeval_reads_a_stray_inside_tag_as_an_entity() -> None:
    result = load("seqeval").compute(predictions=[["I-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])
    assert result["overall_f1"] == 1.0


def test_squad_normalises_and_takes_the_best_reference() -> None:
    references = [
        {"id": "a", "answers": {"text": ["Eiffel Tower", "the tower"], "answer_start": [0, 0]}},
        {"id": "b", "answers": {"text": ["Paris, France"], "answer_start": [0]}},
    ]
    predictions = [{"id": "a", "prediction_text": "The Eiffel tower."}, {"id": "b", "prediction_text": "Paris"}]
    result = load("squad").compute(predictions=predictions, references=references)
    # a: exact after normalisation; b: no exact match, F1 = 2 * (1/1 * 1/2) / (1 + 1/2) = 2/3
    assert result["exact_match"] == pytest.approx(50.0)
    assert result["f1"] == pytest.approx(100 * (1 + 2 / 3) / 2)
