"""ROUGE that works offline and says how it was computed, plus generated-length statistics.

- `split_sentences`: the offline sentence splitter "mega2bart-regex-v1" (`SENTENCE_SPLITTER`).
  `rougeLsum` scores the longest common subsequence per *sentence*, and rouge-score finds
  sentences only at newlines: without a splitter rougeLsum silently equals rougeL (evaluate #501).
  The Hugging Face example uses NLTK `punkt`, which needs a download; this splitter is a regex
  with an abbreviation list, no data files.
- `rouge_scores`: ROUGE-1/2/L/Lsum F-measures (rouge-score, Porter stemming), mean over
  examples x 100, each with a bootstrap confidence interval (resampling examples, fixed seed).
- `length_stats`: generated-length statistics in words and (given a tokenizer) tokens.
- `build_compute_metrics`: the `compute_metrics` callable for `Seq2SeqTrainer` with
  `predict_with_generate=True`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
SENTENCE_SPLITTER = "mega2bart-regex-v1"
"""Name of the sentence splitter `split_sentences` implements; written into every metrics file."""

# Lower-cased tokens that end with a period without ending a sentence (the period is part of the
# token). "et al." is covered by "al"; single letters ("J. Smith", "U.S.") are handled apart.
_ABBREVIATIONS = frozenset(
    """
    al e.g eg i.e ie cf vs etc approx resp fig figs eq eqs sec secs tab tbl ch chap app
    no nos vol vols pp p ed eds dr mr mrs ms prof st jr sr inc ltd co corp dept univ
    jan feb mar apr jun jul aug sep sept oct nov dec est min max avg ref refs
    """.split()
)
# A candidate boundary: sentence punctuation, optional closing quotes/brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?]+[\"'\u2019\u201d)\]]*\s+")
_TOKEN_BEFORE = re.compile(r"(\S+)$")


def split_sentences(text: str) -> list[str]:
    """Split English text into sentences ("mega2bart-regex-v1"), offline and deterministic.

    Rules, in order:
    1. Every newline is a hard boundary (paragraphs, headings, one-sentence-per-line text).
    2. Inside a line, a boundary is `.`/`!`/`?` (possibly repeated, possibly followed by closing
       quotes or brackets) followed by whitespace, and then something that can open a sentence:
       an upper-case letter, a digit, a quote or an opening bracket.
    3. No boundary after a known abbreviation ("e.g.", "i.e.", "et al.", "Fig.", "Eq.", "Sec.",
       "vs.", "Dr.", ...; case-insensitive) or a single-letter initial ("J. Smith", "U.S. Army").
    Decimals ("3.5") and versions ("v1.2") never split, as there is no whitespace after the dot.

    Returns:
        The stripped, non-empty sentences, in order.
    """
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for match in _BOUNDARY.finditer(line):
            end = match.end()
            if end >= len(line) or not _can_open_sentence(line[end]):
                continue
            if match.group().startswith(".") and _is_abbreviation(line[start : match.start()]):
                continue
            sentences.append(line[start:end].strip())
            start = end
        sentences.append(line[start:].strip())
    return [s for s in sentences if s]


def _can_open_sentence(char: str) -> bool:
    return char.isupper() or char.isdigit() or char in "\"'\u2018\u201c("


def _is_abbreviation(before: str) -> bool:
    """`before` is the text of the sentence so far, up to (not including) the final period."""
    match = _TOKEN_BEFORE.search(before)
    if match is None:
        return False
    token = match.group(1).lstrip("\"'(\u2018\u201c[").lower()
    if token in _ABBREVIATIONS:
        return True
    # single-letter initials and dotted acronyms: "J", "U.S", "e.g" written without the last dot
    return bool(re.fullmatch(r"(?:[a-z]\.)*[a-z]", token))


# ----------------------------------------------------------------------------- ROUGE


def rouge_per_example(predictions: Sequence[str], references: Sequence[str]) -> dict[str, np.ndarray]:
    """F-measure (0..1) of each ROUGE type for each prediction/reference pair.

    rouge-score with `use_stemmer=True` (Porter) and its default tokenizer (lower-case, letters and
    digits only). For rougeLsum both texts are first split by `split_sentences` and joined by
    newlines.
    """
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions and {len(references)} references: pass one prediction per reference"
        )
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scores = {name: np.zeros(len(predictions), dtype=np.float64) for name in ROUGE_TYPES}
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        result = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        for name in ROUGE_TYPES:
            scores[name][i] = result[name].fmeasure
    return scores


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean ROUGE-1/2/L/Lsum F-measure x 100 with bootstrap confidence intervals.

    Args:
        predictions / references: one generated and one reference text per example.
        bootstrap_samples: resamples of the examples (with replacement) for the interval; 0 skips it.
        confidence: the interval's coverage, e.g. 0.95 -> the 2.5th and 97.5th percentiles.
        seed: the resampling seed (the same seed gives the same interval).

    Returns:
        `{"rouge1": {"mean", "ci_low", "ci_high"}, ..., "num_examples", "bootstrap_samples",
        "confidence", "seed", "sentence_splitter", "scorer"}`; all scores x 100, rounded to 4 places.
        With `bootstrap_samples=0` the interval keys are absent.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` ({confidence}) must be in (0, 1), e.g. 0.95")
    if bootstrap_samples < 0:
        raise ValueError(f"`bootstrap_samples` ({bootstrap_samples}) must be >= 0 (0 skips the interval)")
    if not predictions:
        raise ValueError("no predictions to score: pass at least one prediction/reference pair")
    per_example = rouge_per_example(predictions, references)
    n = len(predictions)
    out: dict[str, Any] = {}
    rng = np.random.default_rng(seed)
    # one index matrix shared by all ROUGE types, so their intervals come from the same resamples
    indices = rng.integers(0, n, size=(bootstrap_samples, n)) if bootstrap_samples else None  # (samples, n)
    tail = (1.0 - confidence) / 2.0 * 100.0
    for name, values in per_example.items():
        entry = {"mean": round(float(values.mean()) * 100, 4)}
        if indices is not None:
            means = values[indices].mean(axis=1)  # (samples,)
            low, high = np.percentile(means, [tail, 100.0 - tail])
            entry["ci_low"], entry["ci_high"] = round(float(low) * 100, 4), round(float(high) * 100, 4)
        out[name] = entry
    out.update(
        num_examples=n,
        bootstrap_samples=bootstrap_samples,
        confidence=confidence,
        seed=seed,
        sentence_splitter=SENTENCE_SPLITTER,
        scorer="rouge-score RougeScorer(use_stemmer=True), F-measure x 100, mean over examples",
    )
    return out


# ----------------------------------------------------------------------------- lengths


def _describe(values: Sequence[int]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {}
    return {
        "mean": round(float(array.mean()), 2),
        "std": round(float(array.std()), 2),
        "min": float(array.min()),
        "p50": float(np.percentile(array, 50)),
        "p90": float(np.percentile(array, 90)),
        "max": float(array.max()),
    }


def length_stats(texts: Sequence[str], tokenizer: Any | None = None) -> dict[str, Any]:
    """Length statistics of generated texts: words (whitespace-split) and, with a tokenizer, tokens.

    Tokens are counted without special tokens. Also reports how many texts are empty, which is the
    first sign of a generation config that stops at once.
    """
    stats: dict[str, Any] = {
        "num_texts": len(texts),
        "num_empty": sum(1 for t in texts if not t.strip()),
        "words": _describe([len(t.split()) for t in texts]),
    }
    if tokenizer is not None:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []
        stats["tokens"] = _describe([len(i) for i in ids])
    return stats


# ----------------------------------------------------------------------------- Trainer hook


def decode_generated(tokenizer: Any, ids: Any) -> list[str]:
    """Decode generated ids or labels: -100 (label padding, or the Trainer's cross-process padding)
    becomes the pad id first, special tokens are skipped, whitespace is stripped."""
    array = np.asarray(ids)
    if array.ndim == 3:  # logits were returned instead of ids (predict_with_generate=False)
        raise ValueError(
            "compute_metrics got logits of shape "
            f"{tuple(array.shape)}, not generated ids: set predict_with_generate=True for ROUGE"
        )
    array = np.where(array < 0, tokenizer.pad_token_id, array)
    return [text.strip() for text in tokenizer.batch_decode(array, skip_special_tokens=True)]


def build_compute_metrics(tokenizer: Any, bootstrap_samples: int = 0) -> Callable[[Any], dict[str, float]]:
    """`compute_metrics` for `Seq2SeqTrainer(predict_with_generate=True)`.

    Returns flat floats the Trainer can log: rouge1/rouge2/rougeL/rougeLsum (x 100), and gen_len
    (mean generated tokens, special tokens excluded). The bootstrap is off by default here (it is
    evaluation's job, `mega2bart eval`); set `bootstrap_samples` to add `<type>_ci_low/high`.
    """

    def compute_metrics(eval_prediction: Any) -> dict[str, float]:
        predictions = decode_generated(tokenizer, eval_prediction.predictions)
        references = decode_generated(tokenizer, eval_prediction.label_ids)
        scores = rouge_scores(predictions, references, bootstrap_samples=bootstrap_samples)
        flat: dict[str, float] = {}
        for name in ROUGE_TYPES:
            for key, value in scores[name].items():
                flat[name if key == "mean" else f"{name}_{key}"] = value
        lengths = length_stats(predictions, tokenizer)
        flat["gen_len"] = lengths["tokens"].get("mean", 0.0)
        return flat

    return compute_metrics


__all__ = [
    "ROUGE_TYPES",
    "SENTENCE_SPLITTER",
    "build_compute_metrics",
    "decode_generated",
    "length_stats",
    "rouge_per_example",
    "rouge_scores",
    "split_sentences",
]
