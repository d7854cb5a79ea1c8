"""The page of `mega2bart demo`: Gradio Blocks around a `DemoModel` (`build_app`), served by `serve`.

Offline by construction: Gradio's analytics and its version check are off (`GRADIO_ANALYTICS_ENABLED`, set
before Gradio is imported, and `analytics_enabled=False`), the theme uses the system's fonts (no web font), and
there is no server-side rendering, MCP server, run history or "built with" link. The browser test checks every
request the page makes and every resource its HTML and CSS name (tests/test_demo_browser.py).

One run at a time on the model; other requests queue (at most `max_queue` waiting, more are refused). A run is
an async handler that waits for the work in a thread: cancelling it (the Stop button, `Job.cancel()` of
gradio_client, a closed page) sets the run's cancel event, which stops generation at the next decoding step.
The HTTP API has two endpoints, `/summarize` and `/estimate` (README.md shows gradio_client calls).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

os.environ["GRADIO_ANALYTICS_ENABLED"] = (
    "False"  # read by gradio at import and at launch: no telemetry, no version check
)

import gradio as gr  # noqa: E402

from .export import LEVEL_HEADERS, WINDOW_HEADERS  # noqa: E402
from .runner import DOCUMENT_SUFFIXES, Cancelled, DemoModel, RunResult  # noqa: E402

logger = logging.getLogger(__name__)

THEME = gr.themes.Base(
    font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "Consolas", "monospace")
)
"""Gradio's base theme with system fonts only: the default themes load web fonts."""
CSS = "#summary textarea { font-size: 1.05em; } .error-line { color: #b91c1c; }"
LAUNCH_OPTIONS: dict[str, Any] = {
    "theme": THEME,
    "css": CSS,
    "ssr_mode": False,  # no Node server
    "mcp_server": False,
    "pwa": False,
    "run_history": False,  # its page could save runs to a Hub bucket
    "footer_links": ["api"],  # "Use via API" only
    "show_error": True,
    "max_file_size": "64mb",
    "enable_monitoring": False,
}
SETTING_LABELS = {  # the generation fields of the page, in the order of the handlers' parameters
    "num_beams": "beams",
    "max_new_tokens": "max new tokens",
    "min_new_tokens": "min new tokens",
    "no_repeat_ngram_size": "no-repeat n-gram size",
    "length_penalty": "length penalty",
}


def build_app(model: DemoModel, *, max_queue: int = 64) -> gr.Blocks:
    """The page for `model` (see the module docstring); `launch` it with `LAUNCH_OPTIONS` (`serve` does)."""
    with gr.Blocks(title="mega2bart demo", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(
            f"## mega2bart: summarise a long document\nModel `{model.model_dir.name}`, context "
            f"{model.layout.max_input_tokens:,} tokens: a longer document is cut into windows of "
            f"{model.layout.window:,} tokens ({model.layout.window_overlap} shared by neighbours), each window is "
            "summarised, then the window summaries are summarised again."
        )
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label="Paste a text", lines=8, elem_id="text")
                file = gr.File(
                    label=f"... or drop a file ({' '.join(DOCUMENT_SUFFIXES)})",
                    file_types=list(DOCUMENT_SUFFIXES),
                    elem_id="file",
                )
            with gr.Column(scale=2):
                fields = [_setting_field(name, getattr(model.defaults, name)) for name in SETTING_LABELS]
        estimate = gr.Markdown("Paste a text or drop a file to see the estimate.", label="estimate", elem_id="estimate")
        with gr.Row():
            run = gr.Button("Summarise", variant="primary", elem_id="run")
            stop = gr.Button("Stop", variant="stop", elem_id="stop")
        status = gr.Markdown(label="status", elem_id="status")
        summary = gr.Textbox(label="Summary", lines=4, interactive=False, elem_id="summary")
        windows = gr.Dataframe(
            headers=WINDOW_HEADERS, label="Windows of the document", interactive=False, wrap=True, elem_id="windows"
        )
        levels = gr.Dataframe(
            headers=LEVEL_HEADERS, label="Summary of summaries", interactive=False, wrap=True, elem_id="levels"
        )
        with gr.Row():
            json_file = gr.DownloadButton("Download JSON", elem_id="download-json")
            markdown_file = gr.DownloadButton("Download Markdown", elem_id="download-markdown")
        with gr.Accordion("Model", open=False, elem_id="model-panel"):
            gr.Code("\n".join(model.model_lines()), language=None, label="mega2bart info", elem_id="model")

        inputs = [text, file, *fields]

        def estimate_page(
            text: str = "",
            file: str | None = None,
            num_beams: int | None = None,
            max_new_tokens: int | None = None,
            min_new_tokens: int | None = None,
            no_repeat_ngram_size: int | None = None,
            length_penalty: float | None = None,
        ) -> str:
            settings = _settings(num_beams, max_new_tokens, min_new_tokens, no_repeat_ngram_size, length_penalty)
            return _estimate_markdown(model, text, file, settings)

        gr.on(
            [text.change, file.change, *(field.change for field in fields)],
            estimate_page,
            inputs=inputs,
            outputs=estimate,
            api_name="estimate",
            show_progress="hidden",
            trigger_mode="always_last",
            concurrency_limit=4,
            concurrency_id="estimate",
        )

        async def summarise(
            text: str = "",
            file: str | None = None,
            num_beams: int | None = None,
            max_new_tokens: int | None = None,
            min_new_tokens: int | None = None,
            no_repeat_ngram_size: int | None = None,
            length_penalty: float | None = None,
            progress=gr.Progress(),  # noqa: B008
        ) -> tuple:
            settings = _settings(num_beams, max_new_tokens, min_new_tokens, no_repeat_ngram_size, length_penalty)
            cancel = threading.Event()
            try:  # the work in a thread; a cancelled task (Stop, a client's cancel) stops it at the next step
                result = await asyncio.to_thread(_run, model, text, file, settings, progress, cancel)
            except asyncio.CancelledError:
                cancel.set()
                raise
            return _outputs(result)

        event = run.click(
            summarise,
            inputs=inputs,
            outputs=[summary, windows, levels, json_file, markdown_file, status],
            api_name="summarize",
            concurrency_limit=1,
            concurrency_id="model",
        )
        stop.click(None, cancels=[event], api_visibility="private")
    app.queue(max_size=max_queue, default_concurrency_limit=1)
    return app


def _setting_field(name: str, default: Any) -> gr.Number:
    whole = name != "length_penalty"
    return gr.Number(
        default,
        label=SETTING_LABELS[name],
        precision=0 if whole else None,
        minimum=1 if name in ("num_beams", "max_new_tokens") else (0 if whole else None),
        step=1 if whole else 0.1,
        elem_id=name,
    )


def _settings(*values: Any) -> dict[str, Any]:
    """The page's generation fields by name, in the order of `SETTING_LABELS` (the handlers' parameters)."""
    return dict(zip(SETTING_LABELS, values, strict=True))


def _estimate_markdown(model: DemoModel, text: str | None, file: str | None, settings: dict[str, Any]) -> str:
    """The estimate box: the planner's estimate, or the one-line reason there is none."""
    if not file and not (text and text.strip()):
        return "Paste a text or drop a file to see the estimate."
    try:
        generation = model.settings(**settings)
        estimate = model.estimate(model.text_of(text, file), generation)
    except (ValueError, ImportError) as exc:
        return f'<span class="error-line">{_escape(str(exc))}</span>'
    if estimate is None:
        return "No estimate: the planner does not know this model (`mega2bart plan`)."
    return estimate.markdown()


def _run(
    model: DemoModel,
    text: str | None,
    file: str | None,
    settings: dict[str, Any],
    progress: Any,
    cancel: threading.Event,
) -> RunResult:
    """One run, in a worker thread: every user error becomes a visible one-line `gr.Error`."""

    def report(level: int, done: int, total: int) -> None:
        what = "windows of the document" if level == 0 else f"summary of summaries, level {level}"
        progress((done, total), desc=f"{what}: {done}/{total}", unit="windows")

    try:
        generation = model.settings(**settings)
        return model.run(model.document(text, file), generation, progress=report, cancel=cancel)
    except (ValueError, ImportError) as exc:  # bad input; a reader's missing package (its pip command)
        raise gr.Error(" ".join(str(exc).split()), duration=None, print_exception=False) from None
    except Cancelled:
        raise gr.Error("stopped", duration=None, print_exception=False) from None
    except (RuntimeError, OSError) as exc:  # out of memory, a full disk: one line, and the trace in the log
        logger.exception("run failed")
        raise gr.Error(f"{type(exc).__name__}: {' '.join(str(exc).split())}", duration=None) from None


def _outputs(result: RunResult) -> tuple:
    record = result.record
    timing = f"done in {result.seconds:.1f} s"
    if result.estimate is not None:
        timing += f" (estimate {result.estimate.seconds:.1f} s)"
    windows = len(result.windows["data"])
    status = (
        f"{timing}: {record['num_tokens']:,} tokens, {windows} window{'s' if windows > 1 else ''}, "
        f"{record['levels']} level{'s' if record['levels'] > 1 else ''}"
        + (", the last one truncated to the context" if record["truncated"] else "")
    )
    return (
        record["summary"],
        result.windows,
        result.levels,
        str(result.json_path),
        str(result.markdown_path),
        status,
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def serve(
    model: DemoModel, *, host: str = "127.0.0.1", port: int = 7860, max_queue: int = 64, block: bool = True
) -> tuple[gr.Blocks, str]:
    """Serve the page of `model` on `host:port` (loopback by default); `block=False` returns at once with the app
    (close it with `app.close()`) and its URL."""
    app = build_app(model, max_queue=max_queue)
    # no allowed_paths: Gradio copies each run's downloads into its cache and serves only those, so the run
    # folders (the documents users dropped) are never served
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=not block,
        **LAUNCH_OPTIONS,
    )
    return app, url


__all__ = ["CSS", "LAUNCH_OPTIONS", "THEME", "build_app", "serve"]
