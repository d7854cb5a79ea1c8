"""Scoring the probe: recall of each fact per depth bucket, the outputs holding every fact in document order, the
facts' names alone; the predictions `mega2bart eval` wrote, scored (again, for runs written before a metric
existed); and how alike the encoder's outputs are across positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import BUCKET_EDGES, BUCKET_NAMES, NAME_RE, read_jsonl


def bucket_of(depth: int, length: int) -> int:
    fraction = depth / length
    return next(i for i in range(len(BUCKET_NAMES)) if fraction < BUCKET_EDGES[i + 1])


def score(references: list[dict[str, Any]], predictions: list[str], context: int | None = None) -> dict[str, Any]:
    """Recall per depth bucket (a fact counts if its exact sentence is in the output), the share of outputs
    holding every fact in document order, and (with `context`) recall of the facts inside / beyond it."""
    assert len(references) == len(predictions), (len(references), len(predictions))
    k = len(BUCKET_NAMES)
    found, total, named = [0] * k, [0] * k, [0] * k
    inside, beyond = [0, 0], [0, 0]
    ordered = names_found = names_ordered = 0
    for reference, prediction in zip(references, predictions, strict=True):
        positions = [prediction.find(fact) for fact in reference["facts"]]
        for depth, position in zip(reference["depths"], positions, strict=True):
            b = bucket_of(depth, reference["length"])
            total[b] += 1
            found[b] += position >= 0
            if context is not None:
                side = inside if depth + reference["fact_tokens"] <= context - 1 else beyond  # </s> is kept
                side[0] += position >= 0
                side[1] += 1
        ordered += all(p >= 0 for p in positions) and positions == sorted(positions)
        names = [NAME_RE.search(fact).group(1) for fact in reference["facts"]]
        said = NAME_RE.findall(prediction)
        names_found += sum(name in said for name in names)
        for depth, name in zip(reference["depths"], names, strict=True):
            named[bucket_of(depth, reference["length"])] += name in said
        names_ordered += said == names
    result: dict[str, Any] = {
        "recall_by_bucket": {name: (found[i] / total[i] if total[i] else None) for i, name in enumerate(BUCKET_NAMES)},
        "facts_by_bucket": {name: total[i] for i, name in enumerate(BUCKET_NAMES)},
        "recall": sum(found) / max(1, sum(total)),
        "ordered": ordered / max(1, len(references)),
        # the names alone: a fact's name said anywhere; outputs whose names are exactly the facts' in order
        "name_recall": names_found / max(1, sum(total)),
        # per bucket: the fact's name said anywhere (a miss with its name said is a wrong code)
        "name_recall_by_bucket": {
            name: (named[i] / total[i] if total[i] else None) for i, name in enumerate(BUCKET_NAMES)
        },
        "names_in_order": names_ordered / max(1, len(references)),
        "outputs": len(references),
    }
    if context is not None:
        result["recall_inside_context"] = inside[0] / inside[1] if inside[1] else None
        result["recall_beyond_context"] = beyond[0] / beyond[1] if beyond[1] else None
    return result


def score_eval(references: list[dict[str, Any]], eval_dir: Path, context: int) -> tuple[dict[str, Any], list[str]]:
    """`score` of the predictions `mega2bart eval` wrote to `eval_dir`, and those predictions in reference order."""
    said = {row["id"]: row["prediction"] for row in read_jsonl(eval_dir / "predictions.jsonl")}
    predictions = [said[r["id"]] for r in references]
    return score(references, predictions, context), predictions


def rescore(path: Path, run: dict[str, Any]) -> None:
    """Score `run` (its results.json at `path`) again from the predictions next to it, where they are: metrics
    added to `score` since the run count too."""
    references = path.parent / "test.jsonl"
    for name, arm in run["arms"].items():
        eval_dir = path.parent / f"eval-{name}"
        if references.exists() and (eval_dir / "predictions.jsonl").exists():
            arm["score"], _ = score_eval(read_jsonl(references), eval_dir, arm["context"])
        lone = arm.get("lone")
        data, eval_dir = path.parent / "test-lone.jsonl", path.parent / f"eval-{name}-lone"
        if lone and data.exists() and (eval_dir / "predictions.jsonl").exists():
            lone["score"], _ = score_eval(read_jsonl(data), eval_dir, run["settings"]["length"])
        beyond = arm.get("beyond")
        if beyond:
            data = path.parent / f"test-{beyond['length']}.jsonl"
            eval_dir = path.parent / f"eval-{name}-at-{beyond['length'] // 1024}k"
            if data.exists() and (eval_dir / "predictions.jsonl").exists():
                beyond["score"], _ = score_eval(read_jsonl(data), eval_dir, beyond["length"])


def encoder_similarity(model_dir: Path, documents: list[str], context: int, positions: int = 512) -> float:
    """Mean cosine similarity between the encoder's outputs at `positions` random token positions of each
    document (cut to `context`): near 1 means the encoder emits the same vector everywhere, so the decoder
    has nothing position- or token-specific to copy from."""
    import torch

    from mega2bart.builder import load_mega2bart

    model, tokenizer = load_mega2bart(model_dir)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    values = []
    with torch.inference_mode():
        for document in documents:
            batch = tokenizer(document, return_tensors="pt", truncation=True, max_length=context)
            hidden = model.encoder(**batch).last_hidden_state[0]  # (length, H)
            pick = torch.randperm(hidden.shape[0], generator=generator)[:positions]
            unit = torch.nn.functional.normalize(hidden[pick].double(), dim=-1)  # (positions, H)
            values.append(float((unit @ unit.T).mean()))
    return sum(values) / len(values)
