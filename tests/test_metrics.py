"""Offline ROUGE: the sentence splitter, scores, bootstrap intervals, length stats, the Trainer hook."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import EvalPrediction

from mega2bart.metrics import (
    ROUGE_TYPES,
    SENTENCE_SPLITTER,
    build_compute_metrics,
    decode_generated,
    length_stats,
    rouge_per_example,
    rouge_scores,
    split_sentences,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("One. Two! Three? Four.", ["One.", "Two!", "Three?", "Four."]),
        ("We follow Smith et al. (2019) closely. It works.", ["We follow Smith et al. (2019) closely.", "It works."]),
        ("Models, e.g. BERT, help. So do i.e. GPTs.", ["Models, e.g. BERT, help.", "So do i.e. GPTs."]),
        ("See Fig. 2 and Eq. 3 in Sec. 4. Done.", ["See Fig. 2 and Eq. 3 in Sec. 4.", "Done."]),
        ("The score rose to 3.5 points. Then 0.2 more.", ["The score rose to 3.5 points.", "Then 0.2 more."]),
        ("Dr. J. Smith of the U.S. Army spoke. He left.", ["Dr. J. Smith of the U.S. Army spoke.", "He left."]),
        ('He said "Stop." Then he went.', ['He said "Stop."', "Then he went."]),
        ("a lower-case start. does not split", ["a lower-case start. does not split"]),
        ("Heading\nFirst line.\n\nSecond paragraph", ["Heading", "First line.", "Second paragraph"]),
        ("  ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_rouge_identical_and_disjoint():
    scores = rouge_scores(["the cat sat on the mat."], ["the cat sat on the mat."], bootstrap_samples=10)
    for name in ROUGE_TYPES:
        assert scores[name]["mean"] == pytest.approx(100.0)
    scores = rouge_scores(["alpha beta"], ["gamma delta"], bootstrap_samples=0)
    assert all(scores[name]["mean"] == 0.0 for name in ROUGE_TYPES)
    assert "ci_low" not in scores["rouge1"]
    assert scores["sentence_splitter"] == SENTENCE_SPLITTER == "mega2bart-regex-v1"


def test_rouge_uses_stemming():
    per = rouge_per_example(["the models were running"], ["the model was run"])
    assert per["rouge1"][0] > 0.5  # models -> model, running -> run under the Porter stemmer


def test_rouge_lsum_differs_from_rouge_l_only_with_sentences():
    prediction = "The cat sat. A dog ran far away."
    reference = "A dog ran far away. The cat sat."
    scores = rouge_scores([prediction], [reference], bootstrap_samples=0)
    assert scores["rougeLsum"]["mean"] > scores["rougeL"]["mean"]  # sentence-level LCS recovers the swap


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    rng = np.random.default_rng(1)
    words = "a b c d e f g h i j".split()
    predictions = [" ".join(rng.choice(words, 6)) for _ in range(30)]
    references = [" ".join(rng.choice(words, 6)) for _ in range(30)]
    first = rouge_scores(predictions, references, bootstrap_samples=200, seed=3)
    again = rouge_scores(predictions, references, bootstrap_samples=200, seed=3)
    other = rouge_scores(predictions, references, bootstrap_samples=200, seed=4)
    assert first == again
    assert first["rouge1"] != other["rouge1"]
    for name in ROUGE_TYPES:
        assert first[name]["ci_low"] <= first[name]["mean"] <= first[name]["ci_high"]
        assert first[name]["ci_low"] < first[name]["ci_high"]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"confidence": 1.0}, "confidence"), ({"bootstrap_samples": -1}, "bootstrap_samples")],
)
def test_rouge_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rouge_scores(["a"], ["a"], **kwargs)
    with pytest.raises(ValueError, match="one prediction per reference"):
        rouge_per_example(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])


def test_length_stats(offline_tokenizer):
    stats = length_stats(["one two three", "", "four"], offline_tokenizer)
    assert stats["num_texts"] == 3 and stats["num_empty"] == 1
    assert stats["words"]["max"] == 3 and stats["words"]["min"] == 0
    assert stats["tokens"]["max"] == 3  # " two", " three" are single BPE tokens; no specials counted
    assert length_stats([])["words"] == {}


def test_compute_metrics_decodes_padding_and_reports_flat_floats(offline_tokenizer):
    texts = ["the cat sat on the mat.", "a dog barked."]
    encoded = offline_tokenizer(texts, padding=True)["input_ids"]
    labels = np.array(encoded)
    labels[labels == offline_tokenizer.pad_token_id] = -100
    predictions = np.array(encoded)
    predictions[1, -1] = -100  # cross-process padding from the Trainer
    metrics = build_compute_metrics(offline_tokenizer)(EvalPrediction(predictions=predictions, label_ids=labels))
    assert metrics["rouge1"] == pytest.approx(100.0) and metrics["rougeLsum"] == pytest.approx(100.0)
    token_counts = [len(offline_tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert metrics["gen_len"] == pytest.approx(sum(token_counts) / 2)
    assert all(isinstance(v, float) for v in metrics.values())
    with pytest.raises(ValueError, match="predict_with_generate"):
        decode_generated(offline_tokenizer, np.zeros((1, 2, 3)))
