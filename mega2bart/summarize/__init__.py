"""Long-document inference: batches by length, windows beyond the context, a summary of summaries.

`Summarizer(model, tokenizer)` summarises texts of any length:

1. A document that fits the context (`max_input_tokens`, default: the tokenizer's
   `model_max_length`, which the builder sets to the encoder's context) is summarised in one pass.
2. A longer one is cut into overlapping token windows (`window_overlap` tokens shared by
   neighbours); each window is summarised.
3. `merge="summarize"` (default): the window summaries, joined by newlines in document order, are
   summarised again -- recursively, level by level, while the joined text is still longer than the
   context (at most `max_levels` levels; then it is truncated, with a warning).
   `merge="concatenate"`: the window summaries joined by newlines are the summary (textsum-style).

Every result carries its provenance: for each level, each window's token span in that level's
input and the partial summary it produced, so each part of a merged input names the window it
came from. Windows of all documents in a group are generated together, sorted by length.

`summarize_files(...)` reads .txt/.md/.html/.jsonl/.pdf files (or stdin, "-") with
`mega2bart.documents.load_documents` and writes one json line per document, flushed as soon as its
group is done, and the run's statistics beside it (`stats_path`); `skip_existing=True` resumes a
crashed job. The windows of a PDF also name their pages (`Window.pages`).
It never writes over something it did not write: an output that is one of the inputs, or a file
that is not a mega2bart summaries jsonl, is refused (`check_output`). A document that cannot be
summarised (empty, only whitespace, a null text field, not UTF-8, a damaged, encrypted or scanned
PDF) is skipped with a warning naming it; UTF-8 is the only encoding read, so nothing is decoded
with silent replacement characters.
Under `torchrun`/`accelerate launch` (WORLD_SIZE > 1) the groups of documents are shared between the
processes (longest first, each to the least loaded process), each process appends its records to its
own part file beside the output, and the first process merges the parts into the output in the
order a single process writes, and its statistics; a crash leaves the finished records in the parts
for `skip_existing`.
Evaluation on a dataset split (`evaluate_model`) is in `mega2bart.evaluation`, which uses these.

One module per concern:

- `options`: `GenerationOptions`, the generation settings of `summarize` and `eval`.
- `windows`: `Window`, `SummaryResult` and `window_spans`: what a summary is made of.
- `summarizer`: `Summarizer` (generation, windows, merge levels) and `progress_bar`.
- `records`: the summaries jsonl: strict reading, resuming (`finished_ids`), appending.
- `groups`: documents longest first, in groups summarised and appended one at a time.
- `files`: `summarize_files`, `check_output`, the run statistics (`stats_path`).
- `parallel`: several processes: the process group, the part files, `summarize_in_parts`.
- `loading`: `load_for_inference`, `resolve_dtype`, the device, the throughput of a run.

`mega2bart.evaluation` imports the helpers it shares with `parallel` from these modules.
"""

from __future__ import annotations

import logging

from .files import check_output, stats_path, summarize_files
from .loading import load_for_inference, resolve_dtype
from .options import GenerationOptions
from .parallel import summarize_in_parts
from .records import finished_ids
from .summarizer import MAX_CONTEXT, Summarizer
from .windows import SummaryResult, Window, window_spans

# public names of the single module that its `__all__` did not list: importable from here as before
from .loading import DTYPES, inference_device, throughput  # noqa: F401  isort: skip
from .parallel import PARTS_SUFFIX  # noqa: F401  isort: skip
from .records import SUMMARY_KEYS  # noqa: F401  isort: skip

logger = logging.getLogger(__name__)  # the logger every module of the package writes to

__all__ = [
    "MAX_CONTEXT",
    "GenerationOptions",
    "SummaryResult",
    "Summarizer",
    "Window",
    "check_output",
    "finished_ids",
    "load_for_inference",
    "resolve_dtype",
    "stats_path",
    "summarize_files",
    "summarize_in_parts",
    "window_spans",
]
