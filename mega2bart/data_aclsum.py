"""The built-in offline summarisation set "aclsum": 250 ACL papers (full body text -> abstract).

The papers come from the PyPI package `aclsum==0.1.2` (S2ORC json per paper, splits 100/50/100);
`mega2bart.data.load_summarization_dataset("aclsum")` and `load_summarization_stream` read them
through `load_aclsum`, so that training, evaluation and the tests run without the network.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict


def _aclsum_dir() -> Path:
    # Located without importing aclsum (its __init__ imports `sienna`, which we do not need).
    spec = importlib.util.find_spec("aclsum")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "the offline dataset 'aclsum' needs the PyPI package aclsum (Python >= 3.11): pip install aclsum==0.1.2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def aclsum_paper_to_example(paper: dict[str, Any]) -> dict[str, str]:
    """One S2ORC paper json -> {"document", "summary"}.

    The document is the body text: paragraphs joined by blank lines, each new section opened by
    its heading on a line of its own ("3.1 Model"), the paragraph on the next line. The summary
    is the abstract with PDF line breaks folded into spaces.
    """
    blocks: list[str] = []
    previous_section: str | None = None
    for paragraph in paper["pdf_parse"]["body_text"]:
        text = paragraph["text"].strip()
        if not text:
            continue
        section = (paragraph.get("section") or "").strip()
        if section and section != previous_section:
            number = paragraph.get("sec_num")
            heading = f"{number} {section}" if number else section
            text = f"{heading}\n{text}"
        previous_section = section or previous_section
        blocks.append(text)
    abstract = paper.get("abstract") or " ".join(p["text"] for p in paper["pdf_parse"].get("abstract", []))
    return {"document": "\n\n".join(blocks), "summary": " ".join(abstract.split())}


def load_aclsum() -> DatasetDict:
    """The three splits (train, validation, test) with columns "id", "document", "summary"."""
    root = _aclsum_dir()
    splits: dict[str, Dataset] = {}
    for file_split, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows: dict[str, list[str]] = {"id": [], "document": [], "summary": []}
        # {split}.jsonl holds one paper per line, referenced by "id" = paper_jsons/{id}.json
        with (root / f"{file_split}.jsonl").open(encoding="utf-8") as fh:
            paper_ids = [json.loads(line)["id"] for line in fh if line.strip()]
        for paper_id in paper_ids:
            paper = json.loads((root / "paper_jsons" / f"{paper_id}.json").read_text(encoding="utf-8"))
            example = aclsum_paper_to_example(paper)
            rows["id"].append(paper_id)
            rows["document"].append(example["document"])
            rows["summary"].append(example["summary"])
        splits[split] = Dataset.from_dict(rows, split=split)
    return DatasetDict(splits)
