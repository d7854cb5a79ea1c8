"""The CLI's logging: mega2bart's records on the current stderr, and `--quiet` for the libraries."""

from __future__ import annotations

import logging
import sys
from typing import Any

_LOG_HANDLER_NAME = "mega2bart-cli"


def quiet_libraries() -> None:
    """--quiet: no progress bars (datasets, transformers' loading and saving, the Hub's), transformers warnings (e.g.
    generation length notes) only as errors."""
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever `sys.stderr` is when a record comes, not the stream it was made
    with: a command run in-process (typer's CliRunner, a notebook) swaps stderr and may close the old one, and a
    later record would then end in "--- Logging error --- I/O operation on closed file"."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ and setStream assign it; stderr wins
        pass


def setup_logging(verbose: bool, *, libraries: bool = False) -> None:
    """Send mega2bart's log records to the current stderr (one handler, replaced on each command);
    `libraries`: quiet the libraries too (`quiet_libraries`, for --quiet of train, eval, summarize)."""
    if libraries:
        quiet_libraries()
    logger = logging.getLogger("mega2bart")
    for handler in list(logger.handlers):
        if handler.get_name() == _LOG_HANDLER_NAME:
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_LOG_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
