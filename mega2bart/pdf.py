"""The text of a PDF file, ready to summarise: `pdf_text(path)` -> (text, page starts).

The text layer is read with pypdf (`PdfReader`, each page's `extract_text`); what is done here is
the clean-up a summariser needs, page by page and then across pages:

1. Running headers and footers are dropped: a line among the first or last `EDGE_LINES` lines of a
   page whose form with its digits blanked ("Proceedings of ACL 2020, pages # to #") is at an edge of
   at least `REPEATED_SHARE` (a third) of the pages and of two or more, so that titles and author names
   alternating between even and odd pages go too.
2. Page numbers are dropped: an edge line that is only a number ("12", "- 12 -", "Page 12",
   "12 of 30", "xii").
3. Line-end hyphenation is joined: a line ending in a letter and "-" before a line that starts with a
   lower-case letter is joined to that word without the hyphen ("summari-" + "sation" ->
   "summarisation"), unless the document writes the hyphenated form inside a line and never the
   joined one, or writes both halves as words of their own and never joined ("long-" + "range" stays
   "long-range"); after a digit the hyphen stays ("5-" + "gram"). A hyphen inside a line is never
   touched; the joined word is moved to the line (and page) where it started.

Spaces are normalised and ligature characters spelt out ("\\ufb01" -> "fi"). Lines are joined by
"\\n", pages too; `page_starts[k]` is the offset of the first character of page k + 1 in the text
(a page without text starts where the next one does).

A file that cannot be used is a `DocumentError` that says which case it is and what to do: not a
PDF or damaged, encrypted with a password, or without a text layer (a scan).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mega2bart.documents import DocumentError

EDGE_LINES = 2
"""Lines at the top and at the bottom of a page where running headers, footers and page numbers are looked for."""
REPEATED_SHARE = 1 / 3
"""A line at a page edge on at least this share of the pages (and on two or more) is a running header or footer:
a third, so that the headers of papers and books, which alternate between even and odd pages and are not on the
first page, are found in documents of five pages and more."""
HEADER_SEARCH_BYTES = 1024
"""A PDF file starts with "%PDF-" within its first bytes (readers allow some bytes before it)."""

_PAGE_NUMBER = re.compile(
    r"(?:page\s+)?[-\u2013\u2014(\[]?\s*(?:\d+|(?=[ivxlcdm])m*(?:c[md]|d?c{0,3})(?:x[cl]|l?x{0,3})(?:i[xv]|v?i{0,3}))"
    r"\s*[-\u2013\u2014)\]]?(?:\s*(?:of|/)\s*\d+)?",
    re.IGNORECASE,
)  # "12", "- 12 -", "(12)", "Page 12", "12 of 30", "12/30", "xii"
_LINE_END_HYPHEN = re.compile(r"([^\W_]+)-$")  # a word's letters (or digits), then a hyphen ending the line
_LINE_START_WORD = re.compile(r"[^\W\d_]+")
_COMPOUND = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)+")
_LIGATURES = str.maketrans({"\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl"})
_PUNCTUATION = "\"'()[]{}<>.,;:!?*"  # stripped from a token before it counts as a word


def pdf_text(path: str | Path) -> tuple[str, tuple[int, ...]]:
    """The cleaned text layer of the PDF at `path` and the char offset where each page starts.

    Raises:
        ImportError: pypdf is not installed (the message gives the pip command).
        DocumentError: not a PDF or damaged, encrypted with a password, or without a text layer.
    """
    path = Path(path)
    pages = [page.splitlines() for page in _page_texts(str(path), path.read_bytes())]
    if not any(line.strip() for lines in pages for line in lines):
        raise DocumentError(
            str(path),
            f"the PDF has no text layer ({len(pages)} pages of images or drawings only: a scan?): run OCR on it "
            "first (e.g. `ocrmypdf IN.pdf OUT.pdf`) and pass the result",
        )
    return join_pages(pages)


def _page_texts(doc_id: str, data: bytes) -> list[str]:
    """The text layer of each page, as pypdf extracts it."""
    try:
        import pypdf
    except ImportError:
        raise ImportError("reading PDF files needs pypdf: pip install pypdf") from None
    if b"%PDF-" not in data[:HEADER_SEARCH_BYTES]:
        raise DocumentError(
            doc_id,
            f"not a PDF file (no %PDF- header; it starts with {data[:16]!r}): pass the PDF itself, or the "
            "document in a supported format",
        )
    with _quiet_pypdf():
        return _read_pages(pypdf, doc_id, data)


@contextlib.contextmanager
def _quiet_pypdf() -> Iterator[None]:
    """pypdf's warnings about the file ("EOF marker not found") held back: a file it cannot read gets one
    error line of ours instead, and one it reads despite them needs no warning."""
    pypdf_logger = logging.getLogger("pypdf")
    level = pypdf_logger.level
    pypdf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pypdf_logger.setLevel(level)


def _read_pages(pypdf: Any, doc_id: str, data: bytes) -> list[str]:
    """Each page's text of the PDF `data` (`pypdf`: the module, imported by the caller)."""
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        encrypted = reader.is_encrypted and not reader.decrypt("")  # an owner password alone locks no text
    except pypdf.errors.DependencyError as exc:  # AES encryption needs the `cryptography` package
        raise DocumentError(
            doc_id, f"the PDF is encrypted and pypdf cannot decrypt it here ({exc}): pip install cryptography"
        ) from None
    except Exception as exc:  # a damaged file can fail anywhere in the parser, with any exception type
        raise _damaged(doc_id, exc) from None
    if encrypted:
        raise DocumentError(
            doc_id,
            "the PDF is encrypted with a password: decrypt it first (e.g. `qpdf --decrypt --password=PASSWORD "
            "IN.pdf OUT.pdf`) and pass the decrypted file",
        )
    try:
        return [page.extract_text() or "" for page in reader.pages]
    except Exception as exc:  # as above: the page tree or a content stream is broken
        raise _damaged(doc_id, exc) from None


def _damaged(doc_id: str, exc: Exception) -> DocumentError:
    reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return DocumentError(
        doc_id,
        f"the PDF is damaged and cannot be read ({reason}): repair it (e.g. `qpdf IN.pdf OUT.pdf`, or print it to a "
        "new PDF) or pass its text as a .txt file",
    )


# ----------------------------------------------------------------------------- clean-up


def join_pages(pages: list[list[str]]) -> tuple[str, tuple[int, ...]]:
    """The text of `pages` (each a list of lines) with running headers, footers and page numbers dropped
    and line-end hyphenation joined, and the offset of each page's start in it (see the module docstring)."""
    kept = drop_running_lines([[_plain(line) for line in lines if line.strip()] for lines in pages])
    lines = [(number, line) for number, page in enumerate(kept) for line in page]
    lines = join_hyphenation(lines)
    starts: list[int | None] = [None] * len(pages)
    parts: list[str] = []
    offset = 0
    for number, line in lines:
        if starts[number] is None:
            starts[number] = offset
        parts.append(line)
        offset += len(line) + 1
    text = "\n".join(parts)
    following = len(text)  # a page without a line of its own starts where the next one does
    for number in reversed(range(len(pages))):
        following = starts[number] = following if starts[number] is None else starts[number]
    starts[0] = 0
    return text, tuple(starts)  # type: ignore[arg-type]


def _plain(line: str) -> str:
    """`line` with its spaces normalised, ligature characters spelt out ("\ufb01" -> "fi") and a soft hyphen
    ending it (how some PDFs write the typesetter's hyphen) as "-"."""
    line = " ".join(line.translate(_LIGATURES).split())
    return line[:-1] + "-" if line.endswith("\xad") else line


def _edge_form(line: str) -> str:
    return re.sub(r"\d+", "#", line).casefold()


def drop_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """`pages` without their running headers and footers and their page numbers (steps 1 and 2)."""
    edges = [set(range(min(EDGE_LINES, len(p)))) | set(range(max(0, len(p) - EDGE_LINES), len(p))) for p in pages]
    seen = Counter(
        form for page, edge in zip(pages, edges, strict=True) for form in {_edge_form(page[i]) for i in edge}
    )
    least = max(
        2, math.ceil(round(REPEATED_SHARE * len(pages), 9))
    )  # rounded: a float product may land just above a whole number
    running = {form for form, count in seen.items() if count >= least}
    return [
        [
            line
            for i, line in enumerate(page)
            if i not in edge or (_edge_form(line) not in running and not _PAGE_NUMBER.fullmatch(line))
        ]
        for page, edge in zip(pages, edges, strict=True)
    ]


def join_hyphenation(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(page, line) pairs with line-end hyphenation joined (step 3); a line left empty is dropped."""
    compounds: set[str] = set()  # "long-range" -> "long-range"; "state-of-the-art" -> "state-of", "of-the", ...
    words: set[str] = set()  # words standing alone (no hyphen inside), case-folded
    after_hyphen = False
    for _, line in lines:
        tokens = line.split()
        # the pieces around a line-end hyphen are the question, not evidence
        inner = tokens[int(after_hyphen) : len(tokens) - int(line.endswith("-"))]
        after_hyphen = line.endswith("-")
        for match in _COMPOUND.finditer(" ".join(inner)):
            parts = match.group().casefold().split("-")
            compounds.update(f"{a}-{b}" for a, b in zip(parts, parts[1:], strict=False))
        words.update(w.casefold() for w in (t.strip(_PUNCTUATION) for t in inner) if w.isalpha())
    out = [list(pair) for pair in lines]
    for k in range(len(out) - 1):
        line, following = out[k][1], out[k + 1][1]
        end = _LINE_END_HYPHEN.search(line)
        start = _LINE_START_WORD.match(following)
        if not end or not start:
            continue
        hyphen = _hyphen_kept(end.group(1).casefold(), start.group(), compounds, words)
        if hyphen is None:
            continue
        head, _, rest = following.partition(" ")
        out[k][1] = line[:-1] + hyphen + head
        out[k + 1][1] = rest
    return [(page, line) for page, line in out if line]


def _hyphen_kept(left: str, right: str, compounds: set[str], words: set[str]) -> str | None:
    """How a line ending in the letters (or digits) `left` and a hyphen goes on with the word `right` at the start of the
    next: "" (a word hyphenated by the typesetter: joined), "-" (a compound broken at its own hyphen: the
    hyphen kept), or None (not one word across the break: a capitalised word after a dash, a list)."""
    folded = right.casefold()
    if left[-1].isdigit():
        return "-"  # "5-" + "gram": numbers are not hyphenated by typesetters
    if f"{left}-{folded}" in compounds and left + folded not in words:
        return "-"  # the document writes it with a hyphen inside a line ("B-ORG", "long-range")
    if not right[0].islower():
        return None
    if left + folded not in words and left in words and folded in words:
        return "-"  # "character-" + "level": two words of the document, never written joined
    return ""


__all__ = ["EDGE_LINES", "REPEATED_SHARE", "drop_running_lines", "join_hyphenation", "join_pages", "pdf_text"]
