"""The fault matrix's summary line, printed after the run (cases, one-line errors, tracebacks, files changed)."""

from __future__ import annotations

OUTCOMES: list[dict[str, bool]] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    if not OUTCOMES:
        return
    one_line = sum(o["one_line"] for o in OUTCOMES)
    tracebacks = sum(o["traceback"] for o in OUTCOMES)
    changed = sum(o["changed"] for o in OUTCOMES)
    terminalreporter.write_line(
        f"fault matrix: {len(OUTCOMES)} cases, {one_line} one-line errors, {tracebacks} tracebacks, "
        f"{changed} with user files changed"
    )
