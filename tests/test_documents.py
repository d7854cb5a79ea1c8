"""Reading documents from text, Markdown, HTML and JSON-lines files and stdin (`mega2bart.documents`),
as summarising and pretraining do."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from mega2bart.documents import (
    SUPPORTED_SUFFIXES,
    DocumentError,
    document_files,
    html_to_text,
    read_documents,
)


def test_read_documents_formats(tmp_path):
    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "b.md").write_text("# Title\n\nBody.")
    (tmp_path / "c.html").write_text(
        "<html><head><title>t</title><style>p{}</style></head><body><h1>Head</h1><p>Para &amp; more</p>"
        "<script>x()</script></body></html>"
    )
    (tmp_path / "d.jsonl").write_text('{"id": "x1", "text": "first"}\n\n{"document": "second"}\n')
    docs = dict(
        read_documents(
            [tmp_path / n for n in ("a.txt", "b.md", "c.html", "d.jsonl")] + ["-"], stdin=io.StringIO("from stdin")
        )
    )
    assert docs[str(tmp_path / "a.txt")] == "plain text"
    assert docs[str(tmp_path / "b.md")] == "# Title\n\nBody."
    assert docs[str(tmp_path / "c.html")] == "Head\nPara & more"
    assert docs["x1"] == "first" and docs[f"{tmp_path / 'd.jsonl'}:3"] == "second"
    assert docs["-"] == "from stdin"
    assert html_to_text("<p>a<br>b</p>") == "a\nb"


@pytest.mark.parametrize(
    "name, content, error, match",
    [
        ("x.docx", "PK", ValueError, "unsupported extension '.docx'"),
        ("x.jsonl", "{broken\n", ValueError, "x.jsonl:1 is not valid JSON"),
        ("x.jsonl", '{"body": "t"}\n', ValueError, "no text field"),
    ],
)
def test_read_documents_errors(tmp_path, name, content, error, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(error, match=match):
        list(read_documents([tmp_path / name]))
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        list(read_documents([tmp_path / "missing.txt"]))


def test_read_documents_refuses_empty_null_and_undecodable_documents(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "blank.md").write_text("  \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 au lait".encode("latin-1"))
    (tmp_path / "utf16.txt").write_bytes("hello".encode("utf-16-le"))
    (tmp_path / "empty.html").write_text("<html><script>x()</script></html>")
    (tmp_path / "bom.txt").write_bytes("\ufeffWith a byte order mark".encode("utf-8"))
    (tmp_path / "d.jsonl").write_text(
        '{"id": "ok", "text": "fine"}\n{"id": "n", "text": null}\n{"text": "  "}\n{"id": "num", "text": 5}\n'
    )
    names = ["empty.txt", "blank.md", "latin1.txt", "utf16.txt", "empty.html", "bom.txt", "d.jsonl"]
    refused: list[DocumentError] = []
    docs = dict(read_documents([tmp_path / n for n in names] + ["-"], stdin=io.StringIO(""), refused=refused))
    assert docs == {str(tmp_path / "bom.txt"): "With a byte order mark", "ok": "fine"}
    reasons = {error.doc_id: str(error) for error in refused}
    assert set(reasons) == {str(tmp_path / n) for n in names[:5]} | {"n", f"{tmp_path / 'd.jsonl'}:3", "num", "-"}
    assert "is empty" in reasons[str(tmp_path / "empty.txt")]
    assert "only whitespace" in reasons[str(tmp_path / "blank.md")]
    latin1 = reasons[str(tmp_path / "latin1.txt")]
    assert "not UTF-8" in latin1 and "0xe9" in latin1 and "convert it to UTF-8" in latin1
    assert "NUL" in reasons[str(tmp_path / "utf16.txt")]
    assert '"text" field is null' in reasons["n"] and "d.jsonl:2" in reasons["n"]
    assert "int, not a string" in reasons["num"]
    assert "standard input is empty" in reasons["-"]
    # without a list to collect them, the first bad document raises
    with pytest.raises(DocumentError, match="is empty"):
        list(read_documents([tmp_path / "empty.txt"]))


def test_jsonl_lines_are_read_one_by_one_and_a_bad_line_refuses_only_itself(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(
        b'\xef\xbb\xbf{"text": "first\xe2\x80\xa8still the first line"}\r\n'  # BOM, U+2028 in the text, CRLF
        + '{"text": "Caf\u00e9"}\n'.encode("latin-1")
        + b'{"text": "third"}'  # no newline at the end
    )
    refused: list[DocumentError] = []
    docs = list(read_documents([rows], refused=refused))
    assert docs == [(f"{rows}:1", "first\u2028still the first line"), (f"{rows}:3", "third")]
    assert [error.doc_id for error in refused] == [f"{rows}:2"] and "not UTF-8" in str(refused[0])


def test_a_single_text_field_names_itself_and_the_callers_hint(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:1 has no field 'text' \(found \['body'\]\): pass text_column"):
        list(read_documents([rows], text_fields=("text",), field_hint="pass text_column"))
    rows.write_text('["a list"]\n')
    with pytest.raises(ValueError, match=r"has no text field; expected one of .* \(found a JSON list, not an object\)"):
        list(read_documents([rows]))
    rows.write_text('{"body": "x", "text": "not this one"}\n')
    assert list(read_documents([rows], text_fields=("body",))) == [(f"{rows}:1", "x")]


def test_windows_line_breaks_of_whole_files_are_read_as_newlines(tmp_path: Path) -> None:
    (tmp_path / "crlf.txt").write_bytes(b"one\r\ntwo\rthree\n")
    assert list(read_documents([tmp_path / "crlf.txt"])) == [(str(tmp_path / "crlf.txt"), "one\ntwo\nthree\n")]
    assert list(read_documents(["-"], stdin=io.StringIO("a\r\nb"))) == [("-", "a\nb")]


def test_document_files_expands_directories_to_every_supported_suffix(tmp_path: Path) -> None:
    for name in ("b.md", "a.txt", "sub/c.html", "sub/d.jsonl", "sub/e.markdown", "sub/f.pdf", "notes.csv"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("x")
    found = document_files([tmp_path, tmp_path / "a.txt"])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.txt", "b.md", "sub/c.html", "sub/d.jsonl", "sub/e.markdown", "sub/f.pdf", "a.txt"
    ]  # fmt: skip
    assert ".html" in SUPPORTED_SUFFIXES and ".jsonl" in SUPPORTED_SUFFIXES and ".pdf" in SUPPORTED_SUFFIXES
    with pytest.raises(ValueError, match=r"has suffix '\.csv'; supported: \.txt, \.md"):
        document_files([tmp_path / "notes.csv"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .txt/.md/.markdown/.text/.html/.htm/.jsonl/.pdf file"):
        document_files([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        document_files([tmp_path / "missing"])
