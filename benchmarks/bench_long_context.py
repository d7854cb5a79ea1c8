"""Does a mega2bart model read the whole document? A planted-fact probe, trained from scratch on the CPU.

Every input is real text (ACLSum paper bodies, `mega2bart.data`'s offline "aclsum" set, run together)
cut to a target length, with K short fact sentences planted in it, one in each depth bucket
(0-1k, 1-4k, 4-8k, 8-12k, 12-16k of a 16,384-token input; the same fractions of a shorter one):

    ... The access code of the Delta archive is 47. ...

The entity is one of 24 names and the code a number from 10 to 99 (`--code digits`: 4 random digits,
"is 4 7 1 9."), drawn per input, so a fact is right by chance with probability 1/2,160 (1/240,000).
The target is the K facts in document order. Training inputs come from ACLSum's train papers,
held-out inputs from its test papers, with other seeds. Both are written as JSONL
("document"/"summary") that `mega2bart train` and `mega2bart eval` read unchanged.

The model is a small mega2bart built by `mega2bart.builder.build_mega2bart` from configs (random
init; MEGA with the seed's chunk size 1,024 and its bidirectional multi-dimensional damped EMA,
pre-norm ScaleNorm, simple relative bias), trained with `mega2bart train` in three stages:

1. one fact in `stage1_filler` tokens of filler (short, cheap: the model learns to find and copy a fact);
2. 1-5 facts in `stage2_length`-token inputs, random buckets (several facts, in document order);
3. full-length inputs (16,384 tokens, 5 facts), continuing from stage 2, one run per arm:
   - mega-16k: the model reads all `--length` tokens, in training and evaluation;
   - truncated-1024 (control): the same stage-2 model, trained and evaluated on the same data with
     inputs truncated to 1,024 tokens (its first chunk); it cannot see facts beyond that.

Then `mega2bart eval` generates greedily for the held-out inputs and this script scores the
predictions: recall (exact match of each fact sentence) per depth bucket and the share of outputs
that hold every fact in document order. It writes `results.json`, `results.md` and
`recall_by_depth.png` (a dependency-free PNG writer; no matplotlib needed).

    .venv/bin/python benchmarks/bench_long_context.py --quick        # 1,024-token inputs, minutes
    .venv/bin/python benchmarks/bench_long_context.py --out-dir runs/long_context   # the full run
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import json
import os
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _harness import machine_summary, worker_env  # noqa: E402

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
CONTROL_CONTEXT = 1024
EMA_INITS = ("port", "long")  # MegaConfig.ema_init: the 4.x port's init, or reaches spread up to the input length


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# scoring
# ------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------
# model
# ------------------------------------------------------------------------------------------------


def model_configs(length: int, ema_init: str = "long") -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe's encoder and decoder configs: the tiny preset's options at a width that trains on 2 cores,
    with the seed's chunk size (1,024) and EMA kind (bidirectional, multi-dimensional damped), and the product's
    EMA init (`MegaConfig.ema_init`; "long": reaches log-spaced from 4 to `length` tokens, what `mega2bart build`
    gives a random-init MEGA).

    Chosen by trials (benchmarks/README.md, "Trials"). The earlier probe model (post-norm, 64 wide, BART's
    init_std 0.02) stayed at the copy-free loss for 600 steps on 128-token inputs. On one fact in 24 filler
    tokens, 64-wide models (post- or pre-norm, decoder init_std 0.02 or 0.08, AdamW 3e-3) copied under 20% of
    the names after 320-800 steps; pre-norm at width 128 with init_std 0.05 and AdamW 2e-3 copied all of them
    after 550 (the trials changed width and init together, so which of the two mattered is not known).
    """
    from mega2bart.presets import TINY_DECODER, TINY_ENCODER

    encoder = {
        **TINY_ENCODER,
        "hidden_size": 128,
        "intermediate_size": 128,  # E, the value width of the gated attention
        "nffn_hidden_size": 256,
        "shared_representation_size": 32,  # Z, queries and keys
        "ema_projection_size": 16,  # N, EMA dimensions per channel
        "num_hidden_layers": 2,
        "chunk_size": 1024,
        "normalize_before_mega": True,
        "normalize_before_ffn": True,
        "max_positions": max(length, 16384),
        "ema_init": ema_init,
        "ema_max_reach": length,
    }
    decoder = {
        **TINY_DECODER,
        "d_model": 128,
        "encoder_attention_heads": 4,
        "decoder_attention_heads": 4,
        "encoder_ffn_dim": 256,
        "decoder_ffn_dim": 256,
        "max_position_embeddings": 256,
        "init_std": 0.05,
    }
    return encoder, decoder


def led_encoder_config(length: int) -> dict[str, Any]:
    """The LED-shaped control's encoder: LED's encoder attention (Longformer: a sliding window of 1,024 tokens,
    learned absolute positions up to `length`), as wide and deep as the probe's MEGA, random init."""
    mega, _ = model_configs(length)
    return {
        "model_type": "longformer",
        "vocab_size": mega["vocab_size"],
        "hidden_size": mega["hidden_size"],
        "num_hidden_layers": mega["num_hidden_layers"],
        "num_attention_heads": 4,
        "intermediate_size": mega["nffn_hidden_size"],
        "attention_window": CONTROL_CONTEXT,
        "max_position_embeddings": length + 2,  # RoBERTa-style positions start after the padding index
        "type_vocab_size": 1,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }


def build_model(
    directory: Path, length: int, max_new_tokens: int, ema_init: str = "long", encoder: str = "mega", seed: int = 0
) -> dict[str, Any]:
    """Build and save the random-init probe model with `mega2bart.builder` (`ema_init`: `MegaConfig.ema_init`;
    `encoder="longformer"`: the LED-shaped control, `led_encoder_config`); returns its parameter counts."""
    from mega2bart.builder import build_mega2bart, parameter_counts, save_mega2bart

    if ema_init not in EMA_INITS:
        raise ValueError(f"ema_init must be one of {EMA_INITS}, not {ema_init!r}")
    mega, decoder = model_configs(length, ema_init)
    model, tokenizer = build_mega2bart(
        led_encoder_config(length) if encoder == "longformer" else mega,
        decoder,
        "offline",
        max_input_length=length,
        seed=seed,  # the random init; a build is reproducible
        generation={
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": 0,
            "num_beams": 1,
            "no_repeat_ngram_size": 0,
            "length_penalty": 1.0,
            "early_stopping": False,
        },
    )
    save_mega2bart(model, tokenizer, directory, overwrite=True)
    return parameter_counts(model)


# ------------------------------------------------------------------------------------------------
# plot: a PNG written with zlib alone (no matplotlib), a 5x7 bitmap font for the labels
# ------------------------------------------------------------------------------------------------

_GLYPHS = {  # 5 columns x 7 rows, one string of 5 bits per row
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "%": "11001 11010 00010 00100 01000 01011 10011",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 00000 11110 10001 10001 11110 10000",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "g": "00000 01111 10001 10001 01111 00001 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "q": "00000 00000 01101 10011 01111 00001 00001",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "y": "00000 00000 10001 10001 01111 00001 01110",
}


class Canvas:
    """An RGB raster with lines, boxes and text, saved as PNG."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int], size: int = 1) -> None:
        for dy in range(size):
            for dx in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = (py * self.width + px) * 3
                    self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], size: int = 1) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for s in range(steps + 1):
            t = s / steps
            self.dot(round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t), color, size)

    def box(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for yy in range(y, y + h):
            self.line(x, yy, x + w - 1, yy, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> int:
        """Draw `text` with its top-left corner at (x, y); returns the x after it."""
        for char in text:
            rows = _GLYPHS.get(char, _GLYPHS[" "]).split()
            for r, bits in enumerate(rows):
                for c, bit in enumerate(bits):
                    if bit == "1":
                        self.dot(x + c * scale, y + r * scale, color, scale)
            x += 6 * scale
        return x

    def save(self, path: Path) -> None:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))


def plot_recall(arms: dict[str, dict[str, Any]], path: Path, length: int) -> None:
    """Recall (%) per depth bucket of `length`-token inputs, one line per arm, bucket names on the x axis."""
    title = f"fact recall by depth, {length:,}-token inputs"
    # the legend: one row per arm below the axis labels
    width, left, right, top, bottom = 720, 80, 30, 50, 80 + 26 * len(arms)
    height = top + 300 + bottom
    canvas = Canvas(width, height)
    plot_w, plot_h = width - left - right, height - top - bottom
    canvas.text(left, 14, title, scale=2)
    for percent in range(0, 101, 20):
        y = top + plot_h - round(plot_h * percent / 100)
        canvas.line(left, y, left + plot_w, y, (225, 225, 225))
        canvas.text(left - 12 - 6 * 2 * len(f"{percent}%"), y - 7, f"{percent}%", scale=2)
    canvas.line(left, top, left, top + plot_h, (0, 0, 0))
    canvas.line(left, top + plot_h, left + plot_w, top + plot_h, (0, 0, 0))
    n = len(BUCKET_NAMES)
    xs = [left + round(plot_w * (i + 0.5) / n) for i in range(n)]
    for x, name in zip(xs, BUCKET_NAMES, strict=True):
        canvas.line(x, top + plot_h, x, top + plot_h + 5, (0, 0, 0))
        canvas.text(x - 6 * len(name), top + plot_h + 10, name, scale=2)
    canvas.text(left + plot_w // 2 - 6 * 2 * 7, top + plot_h + 36, "depth (tokens)", scale=2)
    legend_x, legend_y = left + 10, top + plot_h + 70
    for (name, result), color in zip(arms.items(), COLORS, strict=False):
        points = [(x, result["recall_by_bucket"][b]) for x, b in zip(xs, BUCKET_NAMES, strict=True)]
        ys = [None if r is None else top + plot_h - round(plot_h * r) for _, r in points]
        for ((x0, _), (x1, _)), (y0, y1) in zip(itertools.pairwise(points), itertools.pairwise(ys), strict=True):
            if y0 is not None and y1 is not None:
                canvas.line(x0, y0, x1, y1, color, size=3)
        for (x, _), y in zip(points, ys, strict=True):
            if y is not None:
                canvas.box(x - 4, y - 4, 9, 9, color)
        canvas.box(legend_x, legend_y + 4, 20, 6, color)
        canvas.text(legend_x + 26, legend_y, name, scale=2)
        legend_y += 26
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    length: int  # stage 3 and held-out inputs
    control_context: int
    stage1_filler: int  # stage 1: one fact in this many filler tokens
    stage1_examples: int
    stage1_steps: int  # at most: a stage ends once its loss is below its stop loss (`mega2bart train`'s stop_at_loss)
    stage1_batch: int
    stage1_stop_loss: float | None
    stage2_length: int  # stage 2: 1-5 facts, random buckets
    stage2_examples: int
    stage2_steps: int
    stage2_batch: int
    stage2_stop_loss: float | None
    stage3_examples: int  # stage 3: full length, 5 facts; one run per arm
    stage3_steps: int  # at most, where stage3_stop_loss is set
    stage3_batch: int
    stage3_stop_loss: float | None
    # the full-length arm's way up to stage 3: rungs (length, distinct inputs, at most steps, batch, stop loss),
    # each continuing from the one before (the first from stage 2) on 5-fact inputs of its length; () for none
    curriculum: tuple[tuple[int, int, int, int, float | None], ...]
    test_examples: int
    beyond_examples: int  # held-out inputs of twice `length` (0: none), read by the stage-3 model of full length
    lone_examples: int  # held-out inputs per bucket with one fact only (0: none), read by the same model
    learning_rate: float  # stages 1 and 2, constant after warm-up
    stage3_learning_rate: float  # cosine
    eval_batch: int


FULL = Settings(
    length=16384,
    control_context=CONTROL_CONTEXT,
    stage1_filler=24,
    stage1_examples=20000,
    stage1_steps=3000,
    stage1_batch=32,
    stage1_stop_loss=0.05,
    stage2_length=128,
    stage2_examples=8000,
    stage2_steps=1500,
    stage2_batch=8,
    stage2_stop_loss=0.05,
    stage3_examples=400,
    stage3_steps=250,
    stage3_batch=1,
    stage3_stop_loss=0.02,
    curriculum=((2048, 2000, 500, 4, 0.05), (4096, 600, 300, 2, 0.04), (8192, 300, 250, 1, 0.03)),
    test_examples=40,
    beyond_examples=20,
    lone_examples=8,
    learning_rate=2e-3,
    stage3_learning_rate=1e-3,
    eval_batch=4,
)
QUICK = Settings(
    length=1024,
    control_context=64,
    stage1_filler=24,
    stage1_examples=64,
    stage1_steps=4,
    stage1_batch=8,
    stage1_stop_loss=None,
    stage2_length=128,
    stage2_examples=32,
    stage2_steps=4,
    stage2_batch=8,
    stage2_stop_loss=None,
    stage3_examples=8,
    stage3_steps=2,
    stage3_batch=4,
    stage3_stop_loss=None,
    curriculum=((512, 8, 2, 4, None),),
    test_examples=4,
    beyond_examples=2,
    lone_examples=1,
    learning_rate=2e-3,
    stage3_learning_rate=1e-3,
    eval_batch=4,
)


class Steps:
    """Each finished step (data, build, a `mega2bart` command) leaves a record in OUT/done/. A rerun into the
    same OUT skips every step whose record matches: same settings and the same steps before it (each record
    holds a digest of the previous one), so an interrupted run loses only the step it was in. `fresh`
    forgets the records."""

    def __init__(self, out: Path, fresh: bool) -> None:
        self.directory = out / "done"
        if fresh:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(what: Any, after: str) -> str:
        return hashlib.sha256(json.dumps({"what": what, "after": after}, sort_keys=True).encode()).hexdigest()

    def started(self, name: str, key: str) -> bool:
        """Whether an earlier run started this very step (same key) and did not finish it; marks it started."""
        path = self.directory / f"{name.replace(' ', '-')}.started"
        before = path.read_text(encoding="utf-8") if path.exists() else None
        path.write_text(key, encoding="utf-8")
        return before == key

    def run(self, name: str, what: Any, after: str, action: Callable[[], Any]) -> tuple[Any, float, str]:
        """(action's result, its seconds, this step's digest for the steps after it)."""
        key = self.key(what, after)
        path = self.directory / f"{name.replace(' ', '-')}.json"
        if path.exists():
            done = json.loads(path.read_text(encoding="utf-8"))
            if done.get("key") == key:
                print(f"{name}: done in an earlier run ({done['seconds']:.0f} s), reused; --fresh redoes it")
                return done["result"], done["seconds"], key
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"key": key, "seconds": seconds, "result": result}), encoding="utf-8")
        os.replace(partial, path)
        return result, seconds, key


def parse_curriculum(text: str) -> tuple[tuple[int, int, int, int, float | None], ...]:
    """`--curriculum`: 'none', or rungs LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS separated by commas."""
    if text.strip().lower() == "none":
        return ()
    rungs = []
    for part in text.split(","):
        fields = part.strip().split(":")
        try:
            if len(fields) != 5:
                raise ValueError
            length, count, steps, batch = (int(f) for f in fields[:4])
            stop = float(fields[4])
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"rung {part!r}: give LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS, e.g. 2048:2000:500:4:0.05"
            ) from None
        if min(length, count, steps, batch) < 1 or not 0 <= stop < float("inf"):
            raise argparse.ArgumentTypeError(f"rung {part!r}: counts must be >= 1 and the stop loss finite, >= 0")
        rungs.append((length, count, steps, batch, stop or None))
    return tuple(rungs)


def format_curriculum(rungs: tuple[tuple[int, int, int, int, float | None], ...]) -> str:
    return ",".join(":".join(str(v if v is not None else 0) for v in rung) for rung in rungs) or "none"


def launch_args(cli_args: list[str], resume: bool) -> list[str]:
    """The arguments a step is launched with: as keyed, except that training checkpoints every 100 steps and,
    with `resume`, goes on from its newest checkpoint instead of starting over."""
    launch = list(cli_args)
    if launch[0] == "train":
        save = launch.index("--save-steps") + 1
        launch[save] = str(min(int(launch[save]), 100))
        if resume:
            i = launch.index("--overwrite")
            launch[i : i + 3] = ["--resume", "auto"]
    return launch


def run_cli(args: list[str], log: Path, threads: int) -> float:
    """Run `mega2bart ARGS` in a subprocess (this checkout first on PYTHONPATH); returns its seconds."""
    env = worker_env(threads, repo_on_path=True, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "mega2bart.cli", *args]
    print(f"$ mega2bart {shlex.join(args)}  (log: {log})", flush=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        done = subprocess.run(command, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise SystemExit(f"mega2bart {args[0]} failed (exit {done.returncode}); last lines of {log}:\n{tail}")
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def train_args(
    model: Path, data: Path, output: Path, s: Settings, *, stage: int, context: int, seed: int, rung: int | None = None
) -> list[str]:
    """`mega2bart train` arguments of stage 1, 2 or 3, or (with `rung`) of that rung of the curriculum, which
    trains at stage 3's rate, kept constant (stage 3 anneals)."""
    if rung is not None:
        _, _, steps, batch, stop = s.curriculum[rung]
        lr = s.stage3_learning_rate
    else:
        steps, batch, lr, stop = {
            1: (s.stage1_steps, s.stage1_batch, s.learning_rate, s.stage1_stop_loss),
            2: (s.stage2_steps, s.stage2_batch, s.learning_rate, s.stage2_stop_loss),
            3: (s.stage3_steps, s.stage3_batch, s.stage3_learning_rate, s.stage3_stop_loss),
        }[stage]
    return [
        "train",
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--output-dir",
        str(output),
        "--max-steps",
        str(steps),
        "--batch-size",
        str(batch),
        "--gradient-accumulation-steps",
        "1",
        "--learning-rate",
        str(lr),
        "--max-source-length",
        str(context),
        "--max-target-length",
        "96",
        "--eval-split",
        "none",
        "--save-steps",
        str(steps),  # launched with a checkpoint every 100 steps, for resuming (see `command` in `main`)
        "--no-gradient-checkpointing",
        "--seed",
        str(seed),
        "--overwrite",  # these three become "--resume auto" when an interrupted run of the same step is resumed
        "--resume",
        "none",  # not --quiet: the log shows progress and losses
        # stages 1 and 2 and the rungs keep their peak rate (the copy is learned late, after a plateau); stage 3
        # anneals
        "--set",
        f"warmup_steps={max(1, min(20, steps // 10))}",
        "--set",
        f"lr_scheduler_type={'cosine' if stage == 3 and rung is None else 'constant_with_warmup'}",
        "--set",
        "weight_decay=0.0",
        "--set",
        f"logging_steps={max(1, min(10, steps // 4))}",
        "--set",
        "save_total_limit=1",
        "--set",
        "train_sampling_strategy=random",
        # short stage-1 inputs stay short: MEGA pads only inputs longer than its chunk
        "--set",
        "pad_to_multiple_of=8",
        # each stage and rung ends when its task is learned: the phase change after the plateau comes at a step
        # that varies with the seed and the CPU (benchmarks/README.md), so a fixed count ends too early or wastes time
        *(["--set", f"stop_at_loss={stop}"] if stop is not None else []),
    ]


def eval_args(model: Path, data: Path, output: Path, s: Settings, *, context: int) -> list[str]:
    return [
        "eval",
        str(model),
        "--output-dir",
        str(output),
        "--dataset",
        str(data),
        "--split",
        "train",
        "--max-input-tokens",
        str(context),
        "--batch-size",
        str(s.eval_batch),
        "--num-beams",
        "1",
        "--max-new-tokens",
        "80",
        "--min-new-tokens",
        "0",
        "--bootstrap-samples",
        "0",
        "--quiet",
    ]


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


def trained_steps(output: Path) -> int:
    """The optimiser steps a `mega2bart train` run took (fewer than its max where it stopped at its loss)."""
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))["run"]["global_step"]


def training_losses(output: Path) -> list[tuple[int, float]]:
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    return [(e["step"], e["loss"]) for e in metrics.get("log_history", []) if "loss" in e]


def markdown(results: dict[str, Any]) -> str:
    arms = results["arms"]
    lines = [
        "| arm | context | "
        + " | ".join(f"recall {b}" for b in BUCKET_NAMES)
        + " | recall (all) | all facts in order | names in order | encoder cosine |",
        "|---|---|" + "---|" * (len(BUCKET_NAMES) + 4),
    ]
    for name, arm in arms.items():
        r = arm["score"]
        cells = [
            ("-" if r["recall_by_bucket"][b] is None else f"{100 * r['recall_by_bucket'][b]:.1f}%")
            for b in BUCKET_NAMES
        ]
        names = f"{100 * r['names_in_order']:.1f}%" if "names_in_order" in r else "-"
        lines.append(
            f"| {name} | {arm['context']:,} | "
            + " | ".join(cells)
            + f" | {100 * r['recall']:.1f}% | {100 * r['ordered']:.1f}% | {names} | {arm['encoder_cosine']:.3f} |"
        )
    s = results["settings"]
    facts = arms[next(iter(arms))]["score"]["facts_by_bucket"]
    lines += [
        "",
        f"{results['test_inputs']} held-out inputs of {s['length']:,} tokens, {len(BUCKET_NAMES)} facts each "
        f"(facts per bucket: {', '.join(f'{b} {n}' for b, n in facts.items())}); "
        f"bucket names are for 16,384 tokens, the same fractions of shorter inputs.",
    ]
    return "\n".join(lines) + "\n"


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


def bucket_labels(length: int) -> list[str]:
    """BUCKET_NAMES for inputs of `length` tokens (the same fractions): "0-2k", ... for 32,768."""
    edges = [round(edge * length / 1024) for edge in BUCKET_EDGES]
    return [f"{lo}-{hi}k" for lo, hi in itertools.pairwise(edges)]


def over_seeds(paths: list[Path], out: Path) -> int:
    """Mean and worst over seeds (one results.json per seed) of every arm, the goal checked, in
    OUT/results_seeds.md and .json."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    for path, run in zip(paths, runs, strict=True):
        rescore(path, run)
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) < len(seeds):
        raise SystemExit(f"two results have the same seed ({seeds}): pass one results.json per seed")

    def rows(
        get: Callable[[dict[str, Any]], dict[str, Any] | None], by_bucket: str = "recall_by_bucket"
    ) -> dict[str, Any] | None:
        scores = [get(run) for run in runs]
        if any(score is None or by_bucket not in score for score in scores):
            return None
        cells: dict[str, Any] = {}
        for bucket in BUCKET_NAMES:  # a bucket without facts (None) in a run is left out of its mean
            values = [v for v in (score[by_bucket][bucket] for score in scores) if v is not None]
            cells[bucket] = (sum(values) / len(values), min(values)) if values else None
        names = by_bucket == "name_recall_by_bucket"  # then "all" and "in order" count names, not whole facts
        for key in ("recall", "ordered", "names_in_order"):
            source = {"recall": "name_recall", "ordered": "names_in_order"}.get(key, key) if names else key
            values = [score[source] for score in scores]
            cells[key] = (sum(values) / len(values), min(values))
        return cells

    table: dict[str, Any] = {}
    for name in runs[0]["arms"]:
        table[name] = rows(lambda run, name=name: run["arms"].get(name, {}).get("score"))
        # the fact's name said (a miss whose name is said is a wrong code)
        table[f"{name}, names said"] = rows(
            lambda run, name=name: run["arms"].get(name, {}).get("score"), "name_recall_by_bucket"
        )
        if runs[0]["arms"][name].get("lone"):
            table[f"{name}, one fact per input"] = rows(
                lambda run, name=name: (run["arms"].get(name, {}).get("lone") or {}).get("score")
            )
        beyond = runs[0]["arms"][name].get("beyond")
        if beyond:
            label = f"{name} read at {beyond['length'] // 1024}k"
            table[label] = rows(lambda run, name=name: (run["arms"].get(name, {}).get("beyond") or {}).get("score"))
    main = table[next(iter(runs[0]["arms"]))]
    goal = {
        "every bucket >= 95% (worst seed)": all(main[b] is not None and main[b][1] >= 0.95 for b in BUCKET_NAMES),
        "all facts right and in order >= 90% (worst seed)": main["ordered"][1] >= 0.90,
    }

    def pct(pair: tuple[float, float] | None) -> str:
        return "-" if pair is None else f"{100 * pair[0]:.1f} / {100 * pair[1]:.1f}"

    length = runs[0]["settings"]["length"]
    lines = [
        f"Mean / worst over seeds {', '.join(map(str, seeds))} (recall, %):",
        "",
        "| arm | " + " | ".join(BUCKET_NAMES) + " | all | all facts in order | names in order |",
        "|---|" + "---|" * (len(BUCKET_NAMES) + 3),
    ]
    for name, cells in table.items():
        if cells is None:
            continue
        if " read at " in name:
            labels = bucket_labels(2 * length)
            name = f"{name} (buckets {labels[0]} ... {labels[-1]})"
        lines.append(
            f"| {name} | "
            + " | ".join(pct(cells[b]) for b in BUCKET_NAMES)
            + f" | {pct(cells['recall'])} | {pct(cells['ordered'])} | {pct(cells['names_in_order'])} |"
        )
    steps = [run.get("stage_steps", {}) for run in runs]
    lines += [
        "",
        "Stage 1 / stage 2 steps (each ends at its loss): "
        + ", ".join(
            f"seed {seed}: {st.get('stage1')} / {st.get('stage2')}" for seed, st in zip(seeds, steps, strict=True)
        ),
        "Goal: " + "; ".join(f"{k}: {'met' if v else 'missed'}" for k, v in goal.items()),
    ]
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    (out / "results_seeds.md").write_text(text, encoding="utf-8")
    (out / "results_seeds.json").write_text(
        json.dumps({"seeds": seeds, "runs": [str(p) for p in paths], "table": table, "goal": goal}, indent=2) + "\n",
        encoding="utf-8",
    )
    # the plot: the mean over seeds of every row read at the training length
    plotted = {
        f"{name} (mean of {len(seeds)})": {
            "recall_by_bucket": {b: cells[b][0] if cells[b] else None for b in BUCKET_NAMES}
        }
        for name, cells in table.items()
        if cells is not None and " read at " not in name and "names said" not in name
    }
    plot_recall(plotted, out / "recall_by_depth_seeds.png", length)
    print(text)
    print(f"wrote {out / 'results_seeds.md'}, results_seeds.json, recall_by_depth_seeds.png")
    return 0


def combine(paths: list[Path], out: Path) -> int:
    """One table and one plot for several runs (e.g. `--ema-init default` and `long`): arms labelled by EMA init
    (and by stage-3 steps where the runs differ in them)."""
    runs = [json.loads(path.read_text(encoding="utf-8")) for path in paths]
    steps = {run["settings"].get("stage3_steps") for run in runs}

    def label(run: dict[str, Any], name: str) -> str:
        text = f"{name}, {run.get('ema_init', 'default')} EMA"
        return text + (f", {run['settings'].get('stage3_steps')} steps" if len(steps) > 1 else "")

    for path, run in zip(paths, runs, strict=True):
        rescore(path, run)
    arms = {label(run, name): arm for run in runs for name, arm in run["arms"].items()}
    if len(arms) < sum(len(run["arms"]) for run in runs):
        raise SystemExit("two runs have the same EMA init, stage-3 steps and arm names: nothing to tell them apart by")
    merged = {**runs[0], "arms": arms, "combined_from": [str(path) for path in paths]}
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(merged)
    (out / "results.md").write_text(table, encoding="utf-8")
    plot_recall(
        {name: arm["score"] for name, arm in arms.items()}, out / "recall_by_depth.png", runs[0]["settings"]["length"]
    )
    print(table)
    print(f"wrote {out / 'results.md'}, {out / 'recall_by_depth.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="short inputs and a few steps: checks the pipeline (minutes)"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / "runs" / "long_context", help="data, models, logs, results"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="OMP threads of each subprocess")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed")
    parser.add_argument("--length", type=int, help="input tokens (default: 16,384; --quick: 1,024)")
    parser.add_argument("--stage1-steps", type=int, help="optimiser steps on single facts in short filler")
    parser.add_argument("--stage2-steps", type=int, help="optimiser steps on 1-5 facts in short inputs")
    parser.add_argument("--stage3-steps", type=int, help="optimiser steps on full-length inputs, per arm")
    parser.add_argument(
        "--stage3-stop-loss", type=float, help="stage 3 ends once its loss is below this (0: never; default 0.02)"
    )
    parser.add_argument(
        "--curriculum",
        type=parse_curriculum,
        help="the full-length arm's rungs before stage 3, LENGTH:INPUTS:STEPS:BATCH:STOP_LOSS,... each at most STEPS "
        "and ending at its loss (STOP_LOSS 0: never), or 'none' (stage 3 straight after stage 2); default "
        + format_curriculum(FULL.curriculum),
    )
    parser.add_argument("--test-examples", type=int, help="held-out inputs")
    parser.add_argument(
        "--ema-init",
        choices=EMA_INITS,
        default="long",
        help="MegaConfig.ema_init: the 4.x port's init (every dimension forgets within ~4 tokens), or reaches "
        "log-spaced from 4 to the input length (what `mega2bart build` gives a random-init MEGA)",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        choices=("mega", "truncated", "led"),
        default=["mega", "truncated"],
        help="stage-3 runs: the full-length MEGA (also read at twice the length), the 1,024-token truncation, and "
        "the LED-shaped control (its own stages 1-2; ~11x MEGA's time per 16k step on a CPU)",
    )
    parser.add_argument("--code", choices=CODES, default="number", help="a fact's code: a number 10-99 or 4 digits")
    parser.add_argument("--plot", type=Path, help="also copy the PNG here")
    parser.add_argument(
        "--fresh", action="store_true", help="redo every step (default: reuse the steps an earlier run finished)"
    )
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only merge the arms of these runs' results.json (labelled by EMA init) into --out-dir's "
        "results.md and recall_by_depth.png",
    )
    parser.add_argument(
        "--over-seeds",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only report the mean and worst over these runs (one per seed) in --out-dir's results_seeds.md",
    )
    args = parser.parse_args(argv)
    if args.over_seeds:
        return over_seeds(args.over_seeds, args.out_dir)
    if args.combine:
        return combine(args.combine, args.out_dir)

    s = QUICK if args.quick else FULL
    overrides = {
        "length": args.length,
        "stage1_steps": args.stage1_steps,
        "stage2_steps": args.stage2_steps,
        "stage3_steps": args.stage3_steps,
        "stage3_stop_loss": args.stage3_stop_loss,
        "curriculum": args.curriculum,
        "test_examples": args.test_examples,
    }
    s = Settings(**{**asdict(s), **{k: v for k, v in overrides.items() if v is not None}})
    if s.stage3_stop_loss == 0:
        s.stage3_stop_loss = None
    if s.length < 512 or s.control_context >= s.length:
        raise SystemExit(f"--length ({s.length}) must be >= 512 and above the control context ({s.control_context})")
    lengths = [rung[0] for rung in s.curriculum]
    if lengths and (lengths != sorted(set(lengths)) or lengths[0] < 256 or lengths[-1] >= s.length):
        raise SystemExit(
            f"--curriculum lengths ({lengths}) must rise, start at >= 256 and stay below --length ({s.length})"
        )
    out: Path = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()

    from mega2bart.tokenization import load_offline_tokenizer

    tokenizer = load_offline_tokenizer(model_max_length=s.length)
    steps = Steps(out, fresh=args.fresh)
    stage1_data, stage2_data = out / "stage1.jsonl", out / "stage2.jsonl"
    stage3_data, test_data = out / "train.jsonl", out / "test.jsonl"

    # what the data depends on (the steps and rates of training do not: changing them reuses the data)
    data_settings = {
        "sizes": [getattr(s, f) for f in ("stage1_filler", "stage1_examples", "stage2_length", "stage2_examples")],
        "full": [s.length, s.stage3_examples, s.test_examples],
        "seed": args.seed,
        "code": args.code,
    }

    def make_data() -> None:
        write_jsonl(
            stage1_data,
            make_single_fact_examples(
                tokenizer, "train", s.stage1_examples, s.stage1_filler, args.seed + 1, "one", code=args.code
            ),
        )
        write_jsonl(
            stage2_data,
            make_examples(
                tokenizer,
                "train",
                s.stage2_examples,
                s.stage2_length,
                args.seed + 4,
                "short",
                some_buckets=True,
                code=args.code,
            ),
        )
        write_jsonl(
            stage3_data,
            make_examples(tokenizer, "train", s.stage3_examples, s.length, args.seed + 2, "train", code=args.code),
        )
        write_jsonl(
            test_data,
            make_examples(tokenizer, "test", s.test_examples, s.length, args.seed + 3, "test", code=args.code),
        )

    _, seconds["data"], digest = steps.run("data", data_settings, "", make_data)
    print(
        f"data: {s.stage1_examples} x 1 fact in {s.stage1_filler} tokens, {s.stage2_examples} x {s.stage2_length}, "
        f"{s.stage3_examples} x {s.length}, {s.test_examples} held-out x {s.length} tokens in {seconds['data']:.0f} s",
        flush=True,
    )
    logs = out / "logs"
    logs.mkdir(exist_ok=True)

    def command(name: str, cli_args: list[str], after: str) -> str:
        def action() -> float:
            # launched as keyed, except: a training run checkpoints every 100 steps, and one that an earlier run
            # of the same step (same key) left unfinished goes on from its newest checkpoint
            resume = cli_args[0] == "train" and steps.started(name, Steps.key(cli_args, after))
            if resume:
                print(f"{name}: interrupted in an earlier run, resumed from its newest checkpoint", flush=True)
            return run_cli(launch_args(cli_args, resume), logs / f"{name.replace(' ', '-')}.log", args.threads)

        _, seconds[name], key = steps.run(name, cli_args, after, action)
        return key

    def trunk(encoder: str, suffix: str) -> tuple[Path, str, dict[str, int]]:
        """Build a model (the `encoder` kind) and train it through stages 1 and 2: (its directory, digest, sizes)."""
        parameters, seconds[f"build{suffix}"], key = steps.run(
            f"build{suffix}",
            [model_configs(s.length, args.ema_init), args.ema_init, encoder],
            digest,
            lambda: build_model(
                out / f"model{suffix}",
                s.length,
                max_new_tokens=80,
                ema_init=args.ema_init,
                encoder=encoder,
                seed=args.seed,
            ),
        )
        print(f"model{suffix}: {parameters}", flush=True)
        previous = out / f"model{suffix}"
        # stage 1's inputs are the filler, one fact and <s>/</s>: any context above that keeps them whole
        for stage, data, context in ((1, stage1_data, s.stage1_filler + 64), (2, stage2_data, s.stage2_length)):
            name = f"stage{stage}{suffix}"
            key = command(
                name, train_args(previous, data, out / name, s, stage=stage, context=context, seed=args.seed), key
            )
            previous = out / name
        return previous, key, parameters

    def climb(name: str, previous: Path, after: str, record: list[dict[str, Any]]) -> tuple[Path, str]:
        """Train `previous` up the curriculum's rungs, each on its own 5-fact inputs of its length and ending at
        its loss: (the last rung's model, its digest). Appends each rung's length, steps and losses to `record`."""
        for i, (length, count, *_) in enumerate(s.curriculum):
            data = out / f"train-{length}.jsonl"
            steps.run(
                f"data {length}",
                [data_settings, length, count],
                "",
                lambda data=data, length=length, count=count, i=i: write_jsonl(
                    data,
                    make_examples(
                        tokenizer, "train", count, length, args.seed + 20 + i, f"rung{length}", code=args.code
                    ),
                ),
            )
            rung_dir = out / f"{name}-rung-{length}"
            after = command(
                f"train {name} rung {length}",
                train_args(previous, data, rung_dir, s, stage=3, context=length, seed=args.seed, rung=i),
                after,
            )
            record.append(
                {
                    "length": length,
                    "steps": trained_steps(rung_dir),
                    "losses": training_losses(rung_dir),
                    "seconds": seconds[f"train {name} rung {length}"],
                }
            )
            previous = rung_dir
        return previous, after

    # one run per arm: (name, encoder kind, context)
    plan = {
        "mega": (f"mega-{s.length // 1024}k", "mega", s.length),
        "truncated": (f"truncated-{s.control_context}", "mega", s.control_context),
        "led": (f"led-{CONTROL_CONTEXT}", "longformer", s.length),
    }
    trunks = {
        kind: trunk(kind, "" if kind == "mega" else f"-{kind}")
        for kind in dict.fromkeys(plan[arm][1] for arm in args.arms)
    }
    parameters = {kind: sizes for kind, (_, _, sizes) in trunks.items()}
    arms: dict[str, dict[str, Any]] = {}
    references = read_jsonl(test_data)
    rungs: list[dict[str, Any]] = []
    for arm in args.arms:
        name, kind, context = plan[arm]
        previous, after, _ = trunks[kind]
        model_dir = out / name
        if arm == "mega" and s.curriculum:
            previous, after = climb(name, previous, after, rungs)
        trained = command(
            f"train {name}",
            train_args(previous, stage3_data, model_dir, s, stage=3, context=context, seed=args.seed),
            after,
        )
        command(f"eval {name}", eval_args(model_dir, test_data, out / f"eval-{name}", s, context=context), trained)
        result, predictions = score_eval(references, out / f"eval-{name}", context)
        arms[name] = {
            "context": context,
            "score": result,
            "losses": {"stage3": training_losses(model_dir)},
            "stage3_steps": trained_steps(model_dir),
            **({"curriculum": rungs} if arm == "mega" and s.curriculum else {}),
            "examples": [
                {"reference": r["summary"], "prediction": p}
                for r, p in zip(references[:3], predictions[:3], strict=True)
            ],
            "encoder_cosine": encoder_similarity(model_dir, [r["document"] for r in references[:2]], context),
        }
        print(f"{name}: {json.dumps(arms[name]['score'])}", flush=True)
        if arm == "mega" and s.beyond_examples:
            # the same model on inputs twice as long as any it was trained on (MEGA has no position cap)
            beyond = 2 * s.length
            beyond_data = out / f"test-{beyond}.jsonl"
            steps.run(
                f"data {beyond}",
                [data_settings, beyond, s.beyond_examples],
                "",
                lambda beyond=beyond, path=beyond_data: write_jsonl(
                    path,
                    make_examples(
                        tokenizer, "test", s.beyond_examples, beyond, args.seed + 5, "beyond", code=args.code
                    ),
                ),
            )
            eval_dir = out / f"eval-{name}-at-{beyond // 1024}k"
            command(
                f"eval {name} at {beyond // 1024}k",
                eval_args(model_dir, beyond_data, eval_dir, s, context=beyond),
                trained,
            )
            beyond_score, _ = score_eval(read_jsonl(beyond_data), eval_dir, beyond)
            arms[name]["beyond"] = {"length": beyond, "score": beyond_score}
            print(f"{name} at {beyond:,} tokens: {json.dumps(beyond_score)}", flush=True)
        if arm == "mega" and s.lone_examples:
            # one fact per input, `lone_examples` inputs per bucket: recall by depth without an order to keep
            lone_data = out / "test-lone.jsonl"
            steps.run(
                "data lone",
                [data_settings, s.lone_examples],
                "",
                lambda path=lone_data: write_jsonl(
                    path,
                    [
                        e
                        for b in range(len(BUCKET_NAMES))
                        for e in make_examples(
                            tokenizer, "test", s.lone_examples, s.length, args.seed + 6 + b, f"lone{b}",
                            only_bucket=b, code=args.code,
                        )
                    ],
                ),
            )  # fmt: skip
            eval_dir = out / f"eval-{name}-lone"
            command(f"eval {name} lone facts", eval_args(model_dir, lone_data, eval_dir, s, context=s.length), trained)
            lone_score, _ = score_eval(read_jsonl(lone_data), eval_dir, s.length)
            arms[name]["lone"] = {"score": lone_score}
            print(f"{name}, one fact per input: {json.dumps(lone_score)}", flush=True)

    results = {
        "settings": asdict(s),
        "seed": args.seed,
        "ema_init": args.ema_init,
        "code": args.code,
        "threads": args.threads,
        "machine": machine_summary(),
        "parameters": parameters["mega"] if "mega" in parameters else parameters,
        "arms_run": list(args.arms),
        "model_configs": dict(zip(("encoder", "decoder"), model_configs(s.length, args.ema_init), strict=True)),
        "stage1_losses": training_losses(out / "stage1"),
        "stage2_losses": training_losses(out / "stage2"),
        "stage_steps": {name: trained_steps(out / name) for name in ("stage1", "stage2")},
        "seconds": seconds,
        "total_seconds": time.perf_counter() - started,
        "test_inputs": s.test_examples,
        "arms": arms,
        "command": "benchmarks/bench_long_context.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (out / "results.md").write_text(table, encoding="utf-8")
    plot_recall({name: arm["score"] for name, arm in arms.items()}, out / "recall_by_depth.png", s.length)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "recall_by_depth.png", args.plot)
    print(table)
    print(f"total {results['total_seconds']:.0f} s; wrote {out / 'results.json'}, results.md, recall_by_depth.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
