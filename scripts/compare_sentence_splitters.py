"""Does mega2bart's ROUGE-Lsum sentence splitter reproduce nltk's English Punkt? Measured on ACLSum.

    .venv/bin/python scripts/compare_sentence_splitters.py [--papers 200] [--parameters-json FILE]

The reference is nltk's own Punkt implementation (nltk comes with rouge-score) with nltk's English
parameters, the splitter `nltk.sent_tokenize` and transformers' run_summarization.py use. By default
they come from nltk's `punkt_tab` data (`python -m nltk.downloader punkt_tab`, or NLTK_DATA pointing
at a copy); where that cannot be downloaded, `--parameters-json` takes the four parameter sets as
JSON: {"AbbrevTypes": {type: 1}, "Collocations": {"first,second": 1}, "SentStarters": {type: 1},
"OrthoContext": {type: flags}}. The script first says whether those parameters equal the English
model that `mega2bart.metrics.split_sentences` uses, then compares the sentences on the abstracts
and bodies of the first `--papers` papers of the offline ACLSum set, and ROUGE-Lsum of body
prefixes (1,000 words) scored against the abstracts with each splitter.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

Splitter = Callable[[str], list[str]]


def nltk_reference(parameters_json: Path | None) -> Any:
    """nltk's PunktSentenceTokenizer with the English parameters (punkt_tab data, or the JSON given)."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer, PunktTokenizer

    if parameters_json is None:
        return PunktTokenizer("english")
    data = json.loads(parameters_json.read_text(encoding="utf-8"))
    params = PunktParameters()
    params.abbrev_types = set(data["AbbrevTypes"])
    params.collocations = {tuple(pair.split(",", 1)) for pair in data["Collocations"]}
    params.sent_starters = set(data["SentStarters"])
    params.ortho_context = defaultdict(int, data["OrthoContext"])
    return PunktSentenceTokenizer(params)


def compare_parameters(reference: Any) -> None:
    import punkt

    ours, theirs = punkt.load_model("english"), reference._params
    for field in ("abbrev_types", "collocations", "sent_starters", "ortho_context"):
        mine, other = getattr(ours, field), getattr(theirs, field)
        same = dict(mine) == dict(other) if field == "ortho_context" else set(mine) == set(other)
        print(f"{field}: {len(mine)} in the splitter's model, {len(other)} in nltk's; equal: {same}")


def lines(split: Splitter) -> Splitter:
    """Sentences then lines, as `split_sentences` returns them and as rouge-score reads them."""
    return lambda text: [line.strip() for sentence in split(text) for line in sentence.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=200, help="How many ACLSum papers (train, validation, test).")
    parser.add_argument("--parameters-json", type=Path, help="nltk's English Punkt parameters as JSON (see above).")
    args = parser.parse_args()

    from rouge_score import rouge_scorer

    from mega2bart.data import load_summarization_dataset
    from mega2bart.metrics import SENTENCE_SPLITTER, split_sentences

    reference = nltk_reference(args.parameters_json)
    compare_parameters(reference)
    nltk_split = lines(reference.tokenize)
    data, _ = load_summarization_dataset("aclsum")
    rows = [row for split in ("train", "validation", "test") for row in data[split]][: args.papers]
    for column, label in (("summary", "abstracts"), ("document", "bodies")):
        texts = [row[column] for row in rows]
        expected = [nltk_split(text) for text in texts]
        same = sum(split_sentences(text) == sentences for text, sentences in zip(texts, expected, strict=True))
        print(f"{label}: {sum(map(len, expected))} nltk sentences; {SENTENCE_SPLITTER} the same in {same}/{len(texts)}")
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    pairs = [(" ".join(row["document"].split()[:1000]), row["summary"]) for row in rows]
    scores = {}
    for name, split in (("nltk", nltk_split), (SENTENCE_SPLITTER, split_sentences)):
        scores[name] = [
            scorer.score("\n".join(split(reference_text)), "\n".join(split(prediction)))["rougeLsum"].fmeasure
            for prediction, reference_text in pairs
        ]
    differences = [abs(a - b) for a, b in zip(scores["nltk"], scores[SENTENCE_SPLITTER], strict=True)]
    print(
        f"ROUGE-Lsum of body prefixes vs abstracts: equal in {sum(d == 0 for d in differences)}/{len(pairs)} pairs, "
        f"largest difference {100 * max(differences):.4f} points"
    )


if __name__ == "__main__":
    main()
