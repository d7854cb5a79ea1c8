"""PDF input (`mega2bart.pdf`, `mega2bart.documents.load_documents`): the text layer of PDFs the tests write
themselves with fpdf2 (ACLSum papers laid out in pages with running headers, footers, page numbers and
hyphenated line breaks), the clean-up rules one by one, the errors of a scanned, an encrypted and a damaged
file, and the pages of each window in what `mega2bart summarize` writes (with the tiny model of conftest.py)."""

from __future__ import annotations

import difflib
import json
import re
import sys
import unicodedata
from pathlib import Path

import pytest

from mega2bart.documents import Document, DocumentError, document_files, load_documents, page_at, read_documents
from mega2bart.pdf import join_hyphenation, join_pages, pdf_text

fpdf = pytest.importorskip("fpdf", reason='the tests write their PDFs with fpdf2: pip install -e ".[test]"')
pypdf = pytest.importorskip("pypdf")

PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 595.0, 842.0, 72.0  # A4 in points
LINE_HEIGHT, FONT_SIZE = 13.0, 10
TITLE_HEADER = "Long-Document Summarisation with Gated Attention"
VENUE_FOOTER = "Proceedings of the 2nd Workshop on Long Texts, 2021, page {page}"
MIN_WORDS_RECOVERED = 0.98


# ----------------------------------------------------------------------------- writing PDFs


def _printable(text: str) -> str:
    """`text` in the characters fpdf2's core fonts have (Latin-1, no control characters), spaces normalised."""
    text = unicodedata.normalize("NFKC", text).encode("latin-1", "replace").decode("latin-1")
    lines = ("".join(c for c in line if c.isprintable() and c != "\xad") for line in text.split("\n"))
    return "\n".join(" ".join(line.split()) for line in lines)


class _Layout:
    """Lines of at most `width` points in Helvetica: words moved to the next line, and a long word that does
    not fit hyphenated ("summari-" / "sation"), or broken after its own hyphen ("long-" / "range")."""

    def __init__(self, pdf, width: float) -> None:
        self.pdf, self.width = pdf, width
        self.hyphenated = self.compounds_broken = 0

    def fits(self, text: str) -> bool:
        return self.pdf.get_string_width(text) <= self.width

    def lines(self, paragraph: str) -> list[str]:
        out, line = [], ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if self.fits(candidate):
                line = candidate
                continue
            head, tail = self.split(line, word)
            if head:
                out.append(f"{line} {head}" if line else head)
                line = tail
            else:
                out.append(line)
                line = word
        return [*out, line] if line else out

    def split(self, line: str, word: str) -> tuple[str, str]:
        """The part of `word` that still fits on `line` (ending in a hyphen) and the rest; ("", word) if none."""
        prefix = f"{line} " if line else ""
        if "-" in word[1:-1]:  # a compound: break after one of its own hyphens
            cuts = [k + 1 for k, c in enumerate(word[:-1]) if c == "-" and k > 0]
            fitting = [k for k in cuts if self.fits(prefix + word[:k])]
            if fitting:
                self.compounds_broken += 1
                return word[: fitting[-1]], word[fitting[-1] :]
            return "", word
        if len(word) < 8 or not word.isalpha() or not word[3:].islower():
            return "", word
        fitting = [k for k in range(3, len(word) - 2) if self.fits(prefix + word[:k] + "-")]
        if not fitting:
            return "", word
        self.hyphenated += 1
        return word[: fitting[-1]] + "-", word[fitting[-1] :]


def write_paper_pdf(path: Path, text: str, *, lines_per_page: int = 40) -> dict[str, int]:
    """Write `text` (paragraphs split by blank lines) as an A4 PDF: a title page without header, then on
    even pages the title and on odd ones "Anonymous submission" at the top, on every page the venue footer
    with its page number and the bare page number at the bottom. Returns what the layout did."""
    pdf = fpdf.FPDF(unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_font("Helvetica", size=FONT_SIZE)
    layout = _Layout(pdf, PAGE_WIDTH - 2 * MARGIN)
    lines: list[str] = []
    for paragraph in text.split("\n\n"):
        for part in paragraph.split("\n"):  # a heading stays on its own line
            lines.extend(layout.lines(part))
    pages = [lines[k : k + lines_per_page] for k in range(0, len(lines), lines_per_page)]
    for number, page in enumerate(pages, start=1):
        pdf.add_page()
        if number > 1:
            pdf.text(MARGIN, 40, TITLE_HEADER if number % 2 == 0 else "Anonymous submission")
        for row, line in enumerate(page):
            pdf.text(MARGIN, 80 + row * LINE_HEIGHT, line)
        pdf.text(MARGIN, PAGE_HEIGHT - 52, VENUE_FOOTER.format(page=number))
        pdf.text(PAGE_WIDTH / 2, PAGE_HEIGHT - 36, str(number))
    pdf.output(str(path))
    return {"pages": len(pages), "hyphenated": layout.hyphenated, "compounds_broken": layout.compounds_broken}


def _aclsum_papers(count: int) -> list[tuple[str, str]]:
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    from mega2bart.data_aclsum import load_aclsum

    split = load_aclsum()["validation"]
    return [(split[k]["id"], _printable(split[k]["document"])) for k in range(count)]


def words_recovered(expected: str, got: str) -> tuple[float, float]:
    """(share of `expected`'s words found in `got` in order, share of `got`'s words that are those):
    the matching blocks of difflib's SequenceMatcher over the two word lists."""
    want, have = expected.split(), got.split()
    matcher = difflib.SequenceMatcher(None, want, have, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return matched / len(want), matched / len(have)


# ----------------------------------------------------------------------------- whole papers


def test_aclsum_papers_written_as_pdfs_read_back_with_98_percent_of_their_words_in_order(tmp_path):
    totals = {"pages": 0, "hyphenated": 0, "compounds_broken": 0}
    for paper_id, text in _aclsum_papers(3):
        path = tmp_path / f"{paper_id}.pdf"
        layout = write_paper_pdf(path, text)
        [document] = load_documents([path])
        recall, precision = words_recovered(text, document.text)
        print(
            f"{paper_id}: {layout['pages']} pages, {layout['hyphenated']} hyphenated breaks, "
            f"{layout['compounds_broken']} compounds broken at their hyphen: {recall:.2%} of the words recovered "
            f"in order, {precision:.2%} of the words read are the paper's"
        )
        assert recall >= MIN_WORDS_RECOVERED and precision >= MIN_WORDS_RECOVERED, (paper_id, recall, precision)
        assert layout["pages"] >= 5 and layout["hyphenated"] >= 5, layout  # the clean-up had work to do
        assert len(document.page_starts) == layout["pages"] and document.page_starts[0] == 0
        assert list(document.page_starts) == sorted(document.page_starts)
        for line in document.text.splitlines():  # no running line, footer or page number is left
            assert line not in (TITLE_HEADER, "Anonymous submission") and not line.isdigit(), line
            assert not line.startswith("Proceedings of the 2nd Workshop"), line
        for key in totals:
            totals[key] += layout[key]
    assert totals["compounds_broken"] >= 1, totals


def test_each_page_start_is_where_that_page_s_text_begins(tmp_path):
    pages = ["The first page opens here.", "Then the second one.", "A third page", "and the last, fourth page."]
    path = tmp_path / "pages.pdf"
    pdf = fpdf.FPDF(unit="pt", format="A4")
    pdf.set_font("Helvetica", size=FONT_SIZE)
    for number, line in enumerate(pages, start=1):
        pdf.add_page()
        pdf.text(MARGIN, 40, "Running header")
        pdf.text(MARGIN, 100, line)
        pdf.text(PAGE_WIDTH / 2, PAGE_HEIGHT - 36, str(number))
    pdf.output(str(path))
    text, starts = pdf_text(path)
    assert text.split("\n") == pages
    assert [text[start : start + len(page)] for start, page in zip(starts, pages, strict=True)] == pages
    assert [page_at(starts, text.index(word)) for word in ("first", "second", "third", "fourth")] == [1, 2, 3, 4]


# ----------------------------------------------------------------------------- the clean-up rules


def test_running_headers_footers_and_page_numbers_are_dropped_and_nothing_else():
    pages = [
        ["A Title Page", "Body one.", "Proceedings 2021, page 1", "1"],
        ["Even Header", "Body two.", "Table 2 shows more.", "Proceedings 2021, page 2", "- 2 -"],
        ["Odd Header", "Body three.", "Proceedings 2021, page 3", "Page 3 of 6"],
        ["Even Header", "Body four.", "Proceedings 2021, page 4", "iv"],
        ["Odd Header", "Body five with 42", "in the middle", "Proceedings 2021, page 5", "5"],
        ["Even Header", "Body six.", "Proceedings 2021, page 6", "(6)"],
    ]
    text, starts = join_pages(pages)
    assert text.split("\n") == [
        "A Title Page",
        "Body one.",
        "Body two.",
        "Table 2 shows more.",
        "Body three.",
        "Body four.",
        "Body five with 42",
        "in the middle",
        "Body six.",
    ]
    assert [text[start:].split("\n")[0] for start in starts] == [
        "A Title Page",
        "Body two.",
        "Body three.",
        "Body four.",
        "Body five with 42",
        "Body six.",
    ]


def test_a_line_at_the_edge_of_too_few_pages_is_kept():
    # on 1 of 4 pages: not a running line (a third of the pages, and two, are needed)
    pages = [["Intro", "text a"], ["Chapter Two", "text b"], ["Intro", "text c"], ["Summary", "text d"]]
    assert join_pages(pages)[0].split("\n") == ["text a", "Chapter Two", "text b", "text c", "Summary", "text d"]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (["we study summari-", "sation of papers"], ["we study summarisation", "of papers"]),
        (["a long-range model and a long-", "range one"], ["a long-range model and a long-range", "one"]),
        (["the character level and the character-", "level tags"], ["the character level and the character-level", "tags"]),
        (["a 5-", "gram model"], ["a 5-gram", "model"]),
        (["tags: B-ORG and B-", "ORG again"], ["tags: B-ORG and B-ORG", "again"]),
        (["a dash -", "then more"], ["a dash -", "then more"]),
        (["Item one and the", "Second item-", "Third item"], ["Item one and the", "Second item-", "Third item"]),
        (["a word never joined, recur-", "rent, and recurrent"], ["a word never joined, recurrent,", "and recurrent"]),
        (["state-of-the-art in one line", "and a split state-of-the-", "art"], ["state-of-the-art in one line", "and a split state-of-the-art"]),
    ],
)  # fmt: skip
def test_line_end_hyphenation(lines, expected):
    assert [line for _, line in join_hyphenation([(0, line) for line in lines])] == expected


def test_ligatures_are_spelt_out_and_a_soft_hyphen_at_a_line_end_is_a_hyphen():
    text, _ = join_pages([["the \ufb01rst e\ufb00ect of summari\xad", "sation, a co\xadoperation"]])
    assert text == "the first effect of summarisation,\na co\xadoperation"


def test_a_word_hyphenated_across_a_page_break_belongs_to_the_page_it_starts_on():
    pages = [["Header", "the first page ends in a hyphen-"], ["Header", "ated word and goes on"], ["Header", "end"]]
    text, starts = join_pages(pages)
    assert text == "the first page ends in a hyphenated\nword and goes on\nend"
    assert [page_at(starts, text.index(word)) for word in ("hyphenated", "word", "\nend")] == [1, 2, 2]
    assert page_at(starts, len(text) - 1) == 3


def test_a_page_without_text_starts_where_the_next_one_does():
    text, starts = join_pages([["one"], [], ["three"]])
    assert text == "one\nthree" and starts == (0, 4, 4)
    assert page_at(starts, 4) == 3 and page_at(starts, 0) == 1


# ----------------------------------------------------------------------------- files that cannot be read


def _image_only_pdf(path: Path, pages: int = 2) -> None:
    """A 'scan': pages that hold an image and no text."""
    from PIL import Image

    pdf = fpdf.FPDF(unit="pt", format="A4")
    for _ in range(pages):
        pdf.add_page()
        pdf.image(Image.new("L", (120, 160), color=200), x=MARGIN, y=MARGIN, w=240)
    pdf.output(str(path))


def _encrypted(source: Path, path: Path, user_password: str) -> None:
    writer = pypdf.PdfWriter(clone_from=source)
    writer.encrypt(user_password, owner_password="owner", algorithm="RC4-128")  # RC4: no `cryptography` needed
    writer.write(path)


@pytest.fixture
def small_pdf(tmp_path) -> Path:
    path = tmp_path / "small.pdf"
    write_paper_pdf(path, "A short paper about summarisation.\n\nIts second paragraph.")
    return path


def _unreadable(kind: str, small_pdf: Path, folder: Path) -> Path:
    """A file of one kind that cannot be read: scanned, encrypted, damaged (truncated, a bare header), not a PDF."""
    path = folder / f"{kind}.pdf"
    if kind == "scanned":
        _image_only_pdf(path)
    elif kind == "encrypted":
        _encrypted(small_pdf, path, user_password="secret")
    elif kind == "truncated":
        data = small_pdf.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "header-only":
        path.write_bytes(b"%PDF-1.4")
    else:
        path.write_bytes(b"<!DOCTYPE html><html>a download that went wrong</html>")
    return path


UNREADABLE = {
    "scanned": "the PDF has no text layer (2 pages of images or drawings only: a scan?): run OCR",
    "encrypted": "the PDF is encrypted with a password: decrypt it first",
    "truncated": "the PDF is damaged and cannot be read (",
    "header-only": "the PDF is damaged and cannot be read (",
    "html": "not a PDF file (no %PDF- header; it starts with b'<!DOCTYPE html><')",
}


@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_unreadable_pdfs_are_refused_by_name_with_what_to_do(kind, small_pdf, tmp_path, capfd):
    path = _unreadable(kind, small_pdf, tmp_path)
    with pytest.raises(DocumentError, match=re.escape(f"{path}: {UNREADABLE[kind]}")) as error:
        list(load_documents([path]))
    assert "\n" not in str(error.value)
    refused: list[DocumentError] = []
    assert list(read_documents([path, small_pdf], refused=refused)) == [(str(small_pdf), pdf_text(small_pdf)[0])]
    assert [e.doc_id for e in refused] == [str(path)]
    assert "EOF marker" not in capfd.readouterr().err  # pypdf's own warnings are held back


def test_an_owner_password_alone_locks_no_text(small_pdf, tmp_path):
    locked = tmp_path / "locked.pdf"
    _encrypted(small_pdf, locked, user_password="")
    assert pypdf.PdfReader(locked).is_encrypted
    assert pdf_text(locked) == pdf_text(small_pdf)


def test_aes_without_the_cryptography_package_says_what_to_install(small_pdf, tmp_path, monkeypatch):
    def needs_cryptography(self, password):  # what pypdf raises for AES when `cryptography` is missing
        raise pypdf.errors.DependencyError("cryptography>=3.1 is required for AES algorithm")

    locked = tmp_path / "locked.pdf"
    _encrypted(small_pdf, locked, user_password="")
    monkeypatch.setattr(pypdf.PdfReader, "decrypt", needs_cryptography)
    with pytest.raises(DocumentError, match="encrypted and pypdf cannot decrypt it here .*: pip install cryptography$"):
        pdf_text(locked)


def test_without_pypdf_the_error_gives_the_install_command(small_pdf, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)
    with pytest.raises(ImportError, match="^reading PDF files needs pypdf: pip install pypdf$"):
        list(load_documents([small_pdf]))


def test_pretraining_reads_pdfs_in_folders(small_pdf, tmp_path):
    (tmp_path / "notes.txt").write_text("plain notes")
    files = document_files([tmp_path])
    assert small_pdf in files
    texts = dict(read_documents(files))
    assert texts[str(tmp_path / "notes.txt")] == "plain notes"
    assert texts[str(small_pdf)] == pdf_text(small_pdf)[0]
    assert texts[str(small_pdf)].startswith("A short paper about summarisation.\nIts second paragraph.\n")


# ----------------------------------------------------------------------------- pages in the summaries


@pytest.fixture(scope="module")
def tiny_model(tiny_mega2bart_dir):
    from mega2bart.builder import load_mega2bart

    return load_mega2bart(tiny_mega2bart_dir)


def _tiny_summarizer(tiny_model):
    from mega2bart.summarize import GenerationOptions, Summarizer

    fast = GenerationOptions(num_beams=1, max_new_tokens=24, min_new_tokens=20)
    return Summarizer(*tiny_model, max_input_tokens=64, window_overlap=8, generation=fast, max_levels=4)


def _paged_document() -> Document:
    pages = [" ".join(f"Page {p} sentence {s} tells about topic {s % 5}." for s in range(12)) for p in range(1, 6)]
    return Document("paged", "\n".join(pages), tuple(sum(len(p) + 1 for p in pages[:k]) for k in range(len(pages))))


def _pages_from_prefixes(summarizer, document: Document, token: int) -> int:
    """The page of `token`, counted the slow way: pages whose text before them is at most `token` tokens long."""
    return sum(len(summarizer._encode(document.text[:start])) <= token for start in document.page_starts)


def test_each_window_keeps_its_page_range(tiny_model):
    summarizer = _tiny_summarizer(tiny_model)
    document = _paged_document()
    [result] = summarizer.summarize([document.text], ids=[document.id], page_starts=[document.page_starts])
    level0 = [w for w in result.windows if w.level == 0]
    assert len(level0) > 5 and result.levels >= 2
    for window in level0:
        expected = [_pages_from_prefixes(summarizer, document, t) for t in (window.token_start, window.token_end - 1)]
        assert window.pages == expected, window
    assert level0[0].pages[0] == 1 and level0[-1].pages[1] == 5
    assert any(w.pages[0] < w.pages[1] for w in level0)  # some windows cross a page break
    for window in result.windows:
        if window.level:
            below = [w for w in result.windows if w.level == window.level - 1 and w.index in window.sources]
            assert window.pages == [min(w.pages[0] for w in below), max(w.pages[1] for w in below)], window
    [plain] = summarizer.summarize(["A document without pages."])
    assert [w.pages for w in plain.windows] == [[]]


def test_a_tokenizer_without_offsets_finds_the_same_pages(tiny_model, monkeypatch):
    summarizer = _tiny_summarizer(tiny_model)
    document = _paged_document()
    fast = summarizer._encode_pages(document.text, document.page_starts)
    monkeypatch.setattr(type(summarizer.tokenizer), "is_fast", property(lambda self: False))
    slow = summarizer._encode_pages(document.text, document.page_starts)
    assert slow == fast and sorted(set(fast[1])) == [1, 2, 3, 4, 5]


def test_mega2bart_summarize_paper_pdf(tiny_mega2bart_dir, tmp_path, small_pdf):
    """`mega2bart summarize MODEL paper.pdf` end to end: each window's pages in the record; a PDF that cannot be
    read fails in one line with exit 2."""
    from typer.testing import CliRunner

    from mega2bart.cli import ERROR_EXIT_CODE, app

    [(paper_id, text)] = _aclsum_papers(1)
    paper = tmp_path / "paper.pdf"
    pages = write_paper_pdf(paper, text[:6000], lines_per_page=12)["pages"]
    out = tmp_path / "summaries.jsonl"
    common = ["--max-input-tokens", "512", "--num-beams", "1", "--max-new-tokens", "8", "--quiet"]
    result = CliRunner().invoke(app, ["summarize", str(tiny_mega2bart_dir), str(paper), "--output", str(out), *common])
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["id"] == str(paper) and record["levels"] >= 2
    level0 = [w for w in record["windows"] if w["level"] == 0]
    assert level0[0]["pages"][0] == 1 and level0[-1]["pages"][1] == pages
    assert all(1 <= w["pages"][0] <= w["pages"][1] <= pages for w in record["windows"])
    for kind in ("scanned", "encrypted", "truncated"):
        path, message = _unreadable(kind, small_pdf, tmp_path), UNREADABLE[kind]
        result = CliRunner().invoke(
            app, ["summarize", str(tiny_mega2bart_dir), str(path), "--output", str(tmp_path / f"{kind}.jsonl"), *common]
        )
        assert result.exit_code == ERROR_EXIT_CODE, result.output
        assert message in result.output and result.output.count("\n") == 1, result.output
