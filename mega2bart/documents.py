"""Documents from files: the one reader of text, Markdown, HTML, JSON-lines and PDF files (and stdin).

`load_documents(paths)` yields a `Document` (id, text, page_starts) per document; `summarize` reads
with it, and so can anything that shows where a summary came from (PDF pages). `read_documents(paths)`
yields the same documents as (id, text) pairs, for readers that need no pages (`pretraining`).

- .txt/.md/.markdown/.text (`TEXT_SUFFIXES`): the whole file is one document, id = its path;
- .html/.htm (`HTML_SUFFIXES`): the visible text (`html_to_text`), id = its path;
- .pdf (`PDF_SUFFIXES`): the text layer, cleaned (`mega2bart.pdf.pdf_text`: running headers,
  footers and page numbers dropped, line-end hyphenation joined), id = its path, and the offset
  where each page starts (`Document.page_starts`; `page_at` maps an offset to its page);
- .jsonl (`JSONL_SUFFIXES`): one document per line, in the first of `text_fields` the line has
  (default `JSONL_TEXT_FIELDS`: "text", "document", "article"); id = the line's "id" field if
  present, else "<path>:<line number>";
- "-" (`STDIN`): all of standard input as one document, id "-".

Text is UTF-8 (a byte order mark is dropped) and nothing is decoded with silent replacement
characters; the line breaks of a whole-file document are normalised to "\\n" (as Python's text
mode reads them). A document that cannot be used -- empty, only whitespace, a null or non-string
text field, not UTF-8, NUL bytes, a PDF that is damaged, encrypted with a password or without a
text layer -- is a `DocumentError`: raised, or collected and skipped when the caller passes a
`refused` list. A missing file, an unsupported suffix and a JSON line that is not a JSON object
with a text field always raise: they are mistakes in the command, not in one document.
`document_files` expands directories into the files of these suffixes (pretraining takes
directories; summarising takes files only, so that an output in the same folder is never read
back as an input).
"""

from __future__ import annotations

import bisect
import codecs
import html.parser
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
HTML_SUFFIXES = (".html", ".htm")
JSONL_SUFFIXES = (".jsonl",)
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + HTML_SUFFIXES + JSONL_SUFFIXES + PDF_SUFFIXES
JSONL_TEXT_FIELDS = ("text", "document", "article")
"""The text fields of a .jsonl line that `read_documents` looks for by default, in this order."""
STDIN = "-"


class DocumentError(ValueError):
    """A document that cannot be used: empty, only whitespace, a null or non-text field, not UTF-8."""

    def __init__(self, doc_id: str, reason: str) -> None:
        super().__init__(f"{doc_id}: {reason}")
        self.doc_id = doc_id
        self.reason = reason


class Document(NamedTuple):
    """One document of `load_documents`."""

    id: str
    """The file's path (a .jsonl line: its "id" field, else "<path>:<line number>"; stdin: "-")."""
    text: str
    page_starts: tuple[int, ...] = ()
    """The offset in `text` where each page starts (page k + 1 at `page_starts[k]`; the first is 0), for a
    PDF; () for a document without pages."""


def page_at(page_starts: Sequence[int], offset: int) -> int:
    """The page (1-based) that the character at `offset` is on, given the `page_starts` of its document."""
    return max(1, bisect.bisect_right(page_starts, offset))


# ----------------------------------------------------------------------------- HTML


class _TextExtractor(html.parser.HTMLParser):
    """Visible text of an HTML page: script/style/head dropped, block elements become line breaks."""

    _SKIP = {"script", "style", "head", "noscript", "template"}
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "blockquote", "pre", "table", "ul", "ol", "header", "footer", "title"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip_depth += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip_depth = max(0, self.skip_depth - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self.parts.append(data)

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self.parts).splitlines())
        return "\n".join(line for line in lines if line)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML document, one line per block element.

    The parsing is the standard library's `html.parser` (entities decoded, broken markup
    tolerated); only the choice of what is visible and what breaks a line is made here.
    """
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return parser.text()


# ----------------------------------------------------------------------------- paths


def document_files(paths: Iterable[str | Path]) -> list[Path]:
    """`paths` with every directory replaced by its files of a supported suffix (recursively, sorted).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a file of an unsupported suffix, or a directory without a supported file.
    """
    files: list[Path] = []
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise ValueError(f"directory {str(name)!r} holds no {'/'.join(SUPPORTED_SUFFIXES)} file")
            files.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise ValueError(
                    f"text file {str(name)!r} has suffix {path.suffix!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
                )
            files.append(path)
        else:
            raise FileNotFoundError(f"text file or directory {str(name)!r} does not exist")
    return files


# ----------------------------------------------------------------------------- reading


def read_documents(
    paths: Sequence[str | Path],
    stdin: Any = None,
    refused: list[DocumentError] | None = None,
    *,
    text_fields: Sequence[str] = JSONL_TEXT_FIELDS,
    field_hint: str = "",
) -> Iterator[tuple[str, str]]:
    """Yield (id, text) for each document of `load_documents` (same arguments, same errors): for
    readers that need no page starts."""
    for document in load_documents(paths, stdin, refused, text_fields=text_fields, field_hint=field_hint):
        yield document.id, document.text


def load_documents(
    paths: Sequence[str | Path],
    stdin: Any = None,
    refused: list[DocumentError] | None = None,
    *,
    text_fields: Sequence[str] = JSONL_TEXT_FIELDS,
    field_hint: str = "",
) -> Iterator[Document]:
    """Yield a `Document` for each document in `paths`, read one file (or one JSON line) at a time.

    Args:
        paths: files of `SUPPORTED_SUFFIXES`, or "-" for `stdin` (default `sys.stdin`).
        refused: if a list, each `DocumentError` is appended to it and the document skipped;
            if None, the first one raises.
        text_fields: the .jsonl field names that may hold the text; the first present is read.
        field_hint: how the caller names another field, appended to the error of a line without one.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: an unsupported suffix, a .jsonl line that is not valid JSON or has no text
            field (the message names the file and line).
        DocumentError: an unusable document, when `refused` is None.
        ImportError: a PDF without pypdf installed (the message gives the pip command).
    """
    for raw in paths:
        try:
            if str(raw) == STDIN:
                yield Document(STDIN, _nonblank(STDIN, _read_stdin(stdin), "standard input"))
                continue
            path = _supported_file(Path(raw))
            _unicode_name(path)
            suffix = path.suffix.lower()
            if suffix in JSONL_SUFFIXES:
                yield from (Document(*pair) for pair in _read_jsonl(path, refused, text_fields, field_hint))
                continue
            if suffix in PDF_SUFFIXES:
                from mega2bart.pdf import pdf_text  # imports pypdf, and this module

                yield Document(str(path), *pdf_text(path))
                continue
            content = _newlines(_decode(str(path), path.read_bytes()))
            if suffix in HTML_SUFFIXES:
                visible = html_to_text(content)
                if not visible.strip():
                    raise DocumentError(str(path), "the page has no visible text")
                yield Document(str(path), visible)
            else:
                yield Document(str(path), _nonblank(str(path), content, "the file"))
        except DocumentError as error:
            if refused is None:
                raise
            refused.append(error)


def _supported_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r} does not exist (or is not a file)")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot read {str(path)!r}: unsupported extension {suffix!r}; supported are "
            f"{', '.join(SUPPORTED_SUFFIXES)} (or '-' for stdin)"
        )
    return path


def _read_stdin(stdin: Any) -> str:
    source = stdin or sys.stdin
    buffer = getattr(source, "buffer", None)  # bytes, so that the decoding is ours
    return _newlines(_decode(STDIN, buffer.read()) if buffer is not None else source.read())


def _decode(doc_id: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            doc_id,
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): convert it to UTF-8, "
            "e.g. from Latin-1 with `iconv -f latin1 -t utf-8 IN > OUT`",
        ) from None
    if "\x00" in text:
        raise DocumentError(doc_id, "it contains NUL bytes (binary, or UTF-16 text?): convert it to UTF-8 text")
    return text


def _unicode_name(path: Path) -> None:
    """A file name that is not UTF-8 (Python holds its bytes as lone surrogates) cannot be a record's id: refuse it
    by its bytes (its text cannot be printed either)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        raise DocumentError(shown, "the file name is not valid UTF-8: rename the file (e.g. with `convmv`)") from None


def unicode_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized or written as UTF-8, or None: a byte that was not UTF-8 (a command-line
    argument or file name keeps it as a surrogate escape) or a lone surrogate (a JSON escape such as "\\ud800"
    without its pair)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        if 0xDC80 <= code <= 0xDCFF:
            return f"a byte that is not UTF-8 (0x{code - 0xDC00:02x} at character {exc.start})"
        return f"a lone surrogate (\\u{code:04x} at character {exc.start}), which is not valid Unicode"
    return None


def _unicode_text(doc_id: str, text: str, what: str) -> str:
    problem = unicode_problem(text)
    if problem is not None:
        raise DocumentError(
            doc_id.encode("utf-8", "backslashreplace").decode("utf-8"),
            f"{what} holds {problem}: fix that escape in the file (a surrogate needs its pair, e.g. "
            "\\ud83d\\ude00) or remove it",
        )
    return text


def _newlines(text: str) -> str:
    """Windows ("\\r\\n") and old Mac ("\\r") line breaks as "\\n", as Python's text mode reads files."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _nonblank(doc_id: str, text: str, what: str) -> str:
    if not text.strip():
        raise DocumentError(doc_id, f"{what} is empty" if not text else f"{what} has only whitespace")
    return text


def _read_jsonl(
    path: Path, refused: list[DocumentError] | None, text_fields: Sequence[str], field_hint: str
) -> Iterator[tuple[str, str]]:
    """The documents of a .jsonl file, read line by line (a corpus need not fit in memory)."""
    with path.open("rb") as handle:
        for number, line in _numbered_lines(handle):
            try:
                document = _jsonl_document(path, number, line, text_fields, field_hint)
            except DocumentError as error:
                if refused is None:
                    raise
                refused.append(error)
                continue
            if document is not None:
                yield document


def _numbered_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each line, split at "\\n" only (JSON text may hold U+2028 and other
    characters that `str.splitlines` would break at); the byte order mark of the first line dropped."""
    for number, line in enumerate(handle, start=1):
        yield number, line.removeprefix(codecs.BOM_UTF8) if number == 1 else line


def _jsonl_document(
    path: Path, number: int, line: bytes, text_fields: Sequence[str], field_hint: str
) -> tuple[str, str] | None:
    """(id, text) of one .jsonl line; None for a blank line."""
    where = f"{path}:{number}"
    text = _decode(where, line)
    if not text.strip():
        return None
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where} is not valid JSON ({exc.msg})") from exc
    field_name = next((f for f in text_fields if isinstance(row, dict) and f in row), None)
    if field_name is None:
        raise ValueError(_missing_field(where, row, text_fields, field_hint))
    doc_id, value = _unicode_text(where, str(row.get("id", where)), f'{where}: the "id" field'), row[field_name]
    field_where = f'{where}: the "{field_name}" field'
    if value is None:
        raise DocumentError(doc_id, f"{field_where} is null")
    if not isinstance(value, str):
        raise DocumentError(doc_id, f"{field_where} is of type {type(value).__name__}, not a string")
    return doc_id, _nonblank(doc_id, _unicode_text(doc_id, value, field_where), field_where)


def _missing_field(where: str, row: Any, text_fields: Sequence[str], field_hint: str) -> str:
    found = sorted(row) if isinstance(row, dict) else f"a JSON {type(row).__name__}, not an object"
    if len(text_fields) == 1:
        message = f"{where} has no field {text_fields[0]!r} (found {found})"
    else:
        message = f"{where} has no text field; expected one of {list(text_fields)} (found {found})"
    return f"{message}: {field_hint}" if field_hint else message


__all__ = [
    "Document",
    "DocumentError",
    "HTML_SUFFIXES",
    "JSONL_SUFFIXES",
    "JSONL_TEXT_FIELDS",
    "PDF_SUFFIXES",
    "STDIN",
    "SUPPORTED_SUFFIXES",
    "TEXT_SUFFIXES",
    "document_files",
    "html_to_text",
    "load_documents",
    "page_at",
    "read_documents",
    "unicode_problem",
]
