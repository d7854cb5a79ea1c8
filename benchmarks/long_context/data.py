"""The probe's data: the planted facts, ACLSum filler as token ids, a fact spliced in at a word start, inputs of
an exact token length with one fact per depth bucket (or one fact in all), and the JSONL that `mega2bart train` and
`mega2bart eval` read."""

from __future__ import annotations

import functools
import json
import os
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Single-token names in the BART/GPT-2 byte-level BPE (checked in `check_single_tokens`).
NAMES = (
    "Alpha",
    "Beta",
    "Gamma",
    "Delta",
    "Kappa",
    "Sigma",
    "Omega",
    "Orion",
    "Atlas",
    "Apollo",
    "Hermes",
    "Juno",
    "Titan",
    "Vega",
    "Nova",
    "Echo",
    "Falcon",
    "Raven",
    "Tiger",
    "Eagle",
    "Cobra",
    "Phoenix",
    "Maple",
    "Cedar",
)
FACT_TEMPLATE = "The access code of the {name} archive is {code}."
# The code: "number", one token from 10-99 (a fact is right by chance with probability 1/2,160), or "digits",
# 4 digit tokens ("4 7 1 9", 1/240,000). With digits, copying digits 2-4 in order was learned once in three
# stage-2 trials of 1,000 steps; the name and digit 1 in all three: the probe then measured that copy rather
# than depth (benchmarks/README.md, "Trials"), so the full run uses "number".
CODES = ("number", "digits")
# a fact's name in an output: "The access code of the (X) archive is", from the template
_BEFORE_NAME, _AFTER_NAME = FACT_TEMPLATE.split("{code}")[0].split("{name}")
NAME_RE = re.compile(re.escape(_BEFORE_NAME) + r"(\w+)" + re.escape(_AFTER_NAME.rstrip()))
CODE_DIGITS = 4
# Depth buckets as fractions of the input: 0-1k, 1-4k, 4-8k, 8-12k, 12-16k of 16,384 tokens.
BUCKET_EDGES = (0.0, 1 / 16, 4 / 16, 8 / 16, 12 / 16, 1.0)
BUCKET_NAMES = ("0-1k", "1-4k", "4-8k", "8-12k", "12-16k")


@dataclass
class Example:
    """One probe input: `document` of exactly `length` tokens (specials included), the facts and where they start."""

    id: str
    document: str
    summary: str
    facts: list[str]
    depths: list[int]  # token index of each fact's first token in the tokenized document
    length: int
    fact_tokens: int


def make_fact(rng: random.Random, name: str, code: str = "number") -> str:
    if code == "number":
        return FACT_TEMPLATE.format(name=name, code=rng.randrange(10, 100))
    if code == "digits":
        return FACT_TEMPLATE.format(name=name, code=" ".join(str(rng.randrange(10)) for _ in range(CODE_DIGITS)))
    raise ValueError(f"code must be one of {CODES}, not {code!r}")


def check_single_tokens(tokenizer: Any) -> None:
    for word in (*NAMES, *map(str, range(100))):
        pieces = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        assert len(pieces) == 1, f"{word!r} is {len(pieces)} tokens; names and digits must be single tokens"


def fact_length(tokenizer: Any, code: str) -> int:
    """Tokens of one fact: the same for every fact, its names and codes being single tokens (checked here)."""
    check_single_tokens(tokenizer)
    return len(tokenizer(" " + make_fact(random.Random(0), NAMES[0], code), add_special_tokens=False)["input_ids"])


@functools.lru_cache(maxsize=4)
def filler_stream(tokenizer: Any, split: str) -> tuple[list[int], list[int], list[int]]:
    """ACLSum paper bodies of `split`, run together, as token ids; the indices where a word starts with a
    space (there a fact can be spliced in without changing how the text around it tokenizes); and the
    indices where a paragraph opens."""
    from mega2bart.data import load_summarization_dataset

    data, _ = load_summarization_dataset("aclsum")
    text = "\n\n".join(data[split]["document"])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    starts = [i for i, token in enumerate(tokens) if token.startswith("Ġ") and len(token) > 1]
    # paragraph openings: a document starts there, so it tokenizes the same once loaders strip() it
    openings = [
        i for i in range(1, len(tokens)) if tokens[i - 1].endswith("Ċ") and not tokens[i].startswith(("Ġ", "Ċ"))
    ]
    return ids, starts, openings


def splice(
    tokenizer: Any, filler: list[int], cuts: list[int], facts: list[str]
) -> tuple[str, list[int], list[int]] | None:
    """`filler` (token ids) with " " + facts[i] spliced in before filler token cuts[i] (ascending): (the document,
    its token ids with <s>/</s>, each fact's token depth in them), or None where that document would not keep
    its length or its facts: filler ending in whitespace (the loaders strip it) or a splice that changed how a
    fact tokenizes (rare)."""
    fact_ids = [tokenizer(" " + fact, add_special_tokens=False)["input_ids"] for fact in facts]
    pieces, depths, previous, shift = [], [], 0, 1  # fact i starts after <s>, the filler before it and facts 0..i-1
    for cut, fact, ids in zip(cuts, facts, fact_ids, strict=True):
        pieces += [tokenizer.decode(filler[previous:cut]), " " + fact]
        depths.append(shift + cut)
        shift += len(ids)
        previous = cut
    pieces.append(tokenizer.decode(filler[previous:]))
    document = "".join(pieces)
    if document != document.strip():
        return None
    ids = tokenizer(document)["input_ids"]
    if any(ids[d : d + len(f)] != f for d, f in zip(depths, fact_ids, strict=True)):
        return None
    return document, ids, depths


def make_examples(
    tokenizer: Any,
    split: str,
    count: int,
    length: int,
    seed: int,
    prefix: str,
    *,
    some_buckets: bool = False,
    only_bucket: int | None = None,
    code: str = "number",
) -> list[Example]:
    """`count` inputs of exactly `length` tokens: filler from ACLSum `split` with one fact per depth bucket.

    `some_buckets=True` (the short first training stage) plants facts in a random non-empty subset of the
    buckets instead, 1 to 5 facts: single facts teach copying before several facts demand an order.
    `only_bucket=i` plants one fact, in bucket i (the lone-fact inputs that tell a depth effect from an order one)."""
    import bisect

    stream, starts, openings = filler_stream(tokenizer, split)
    fact_tokens = fact_length(tokenizer, code)
    k = len(BUCKET_NAMES)
    filler_length = length - 2 - k * fact_tokens  # <s> and </s>
    if filler_length < 8 * k:
        raise ValueError(f"length ({length}) is too short for {k} facts of {fact_tokens} tokens: use >= 128")
    if len(stream) < 2 * filler_length:
        raise ValueError(f"ACLSum {split} has {len(stream)} tokens, too few for inputs of {length}")
    rng = random.Random(seed)
    examples: list[Example] = []
    while len(examples) < count:
        begin = openings[rng.randrange(bisect.bisect_left(openings, len(stream) - filler_length - 1))]
        filler = stream[begin : begin + filler_length]
        # fact i starts at document position 1 + cut_i + i * fact_tokens, inside bucket i
        if only_bucket is not None:
            chosen = [only_bucket]
        else:
            chosen = sorted(rng.sample(range(k), rng.randint(1, k))) if some_buckets else list(range(k))
        cuts: list[int] = []
        for i in range(k):
            low = max(int(BUCKET_EDGES[i] * length), 1 + i * fact_tokens)
            high = int(BUCKET_EDGES[i + 1] * length) - fact_tokens - 1
            depth = rng.randrange(low, max(low + 1, high))
            cut = depth - 1 - (0 if only_bucket is not None else i) * fact_tokens  # the facts planted before it
            # snap to the next word start of the filler (token strings beginning with a space)
            j = bisect.bisect_left(starts, begin + cut)
            cut = starts[j] - begin if j < len(starts) else filler_length
            cuts.append(min(max(cut, cuts[-1] if cuts else 0), filler_length))
        names = rng.sample(NAMES, len(chosen))
        facts = [make_fact(rng, name, code) for name in names]
        cuts = [cuts[i] for i in chosen]  # unplanted buckets keep their filler; the input is shorter by their facts
        spliced = splice(tokenizer, filler, cuts, facts)
        expected = length - (k - len(chosen)) * fact_tokens
        if spliced is None or len(spliced[1]) != expected:
            continue  # draw again
        document, _, depths = spliced
        examples.append(
            Example(
                id=f"{prefix}-{len(examples)}",
                document=document,
                summary=" ".join(facts),
                facts=facts,
                depths=depths,
                length=expected,
                fact_tokens=fact_tokens,
            )
        )
    return examples


def make_single_fact_examples(
    tokenizer: Any, split: str, count: int, filler_tokens: int, seed: int, prefix: str, *, code: str = "number"
) -> list[Example]:
    """`count` short inputs: `filler_tokens` tokens of ACLSum `split` (from a paragraph opening) with one fact
    spliced in at a random word start. The first training stage: with ~40 tokens to search, a copy of the name
    is found within ~550 steps (benchmarks/README.md, "Trials")."""
    import bisect

    fact_tokens = fact_length(tokenizer, code)
    stream, starts, openings = filler_stream(tokenizer, split)
    rng = random.Random(seed)
    examples: list[Example] = []
    while len(examples) < count:
        begin = openings[rng.randrange(bisect.bisect_left(openings, len(stream) - filler_tokens - 1))]
        filler = stream[begin : begin + filler_tokens]
        j = bisect.bisect_left(starts, begin + rng.randrange(filler_tokens))
        cut = min(starts[j] - begin, filler_tokens) if j < len(starts) else filler_tokens
        fact = make_fact(rng, rng.choice(NAMES), code)
        spliced = splice(tokenizer, filler, [cut], [fact])
        if spliced is None:
            continue  # draw again
        document, ids, depths = spliced
        examples.append(
            Example(
                id=f"{prefix}-{len(examples)}",
                document=document,
                summary=fact,
                facts=[fact],
                depths=depths,
                length=len(ids),
                fact_tokens=fact_tokens,
            )
        )
    return examples


def write_jsonl(path: Path, examples: list[Example]) -> None:
    """Write `examples` to `path` whole or not at all (a killed run leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as fh:
        for example in examples:
            fh.write(json.dumps(asdict(example)) + "\n")
    os.replace(partial, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
