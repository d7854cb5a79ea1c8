"""The fault matrix's summary line, printed after the run (cases, one-line errors, tracebacks, files changed); under
pytest-xdist each worker hands its outcomes to the controller, whose tests/conftest.py prints the line."""

from __future__ import annotations

import json

OUTCOMES: list[dict[str, bool]] = []


def summary_line(outcomes: list[dict[str, bool]]) -> str:
    one_line = sum(o["one_line"] for o in outcomes)
    tracebacks = sum(o["traceback"] for o in outcomes)
    changed = sum(o["changed"] for o in outcomes)
    return (
        f"fault matrix: {len(outcomes)} cases, {one_line} one-line errors, {tracebacks} tracebacks, "
        f"{changed} with user files changed"
    )


def pytest_sessionfinish(session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker
        workeroutput["fault_outcomes"] = json.dumps(OUTCOMES)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    if OUTCOMES and getattr(config, "workeroutput", None) is None:
        terminalreporter.write_line(summary_line(OUTCOMES))
