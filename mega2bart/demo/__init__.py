"""`mega2bart demo MODEL`: a web page to summarise one document with a saved model (`pip install "mega2bart[demo]"`).

One pastes a text or drops a file (the suffixes `mega2bart.documents` reads, one document a file); the generation
settings start at the model's own; before a run the page shows the planner's estimate of time and peak memory
for this document on this machine; a progress bar follows the windows and then the summary-of-summaries levels;
the result is the summary, each window's summary with its token span (and pages, when the record has them), the
levels above, and downloads of the record (JSON, as `mega2bart summarize` writes it) and of a Markdown report. A
panel shows what `mega2bart info` prints about the model. Nothing is fetched from the internet.

- `runner`: `DemoModel`, the model loaded once: defaults, input, estimate, a run (cancellable). No Gradio.
- `estimate`: `plan_document`, the planner's estimate of one document's windows and levels.
- `export`: the tables of a summary record and its Markdown.
- `app`: the Gradio page (`build_app`) and `serve`; imported only when Gradio is installed (`require_gradio`).
"""

from __future__ import annotations

import importlib

EXTRA_HINT = 'pip install "mega2bart[demo]"'


def require_gradio() -> None:
    """Raise a one-line ImportError naming the extra when Gradio is not installed."""
    try:
        importlib.import_module("gradio")
    except ImportError as exc:
        raise ImportError(f"`mega2bart demo` needs Gradio, which is not installed ({exc.msg}): {EXTRA_HINT}") from None


__all__ = ["EXTRA_HINT", "require_gradio"]
