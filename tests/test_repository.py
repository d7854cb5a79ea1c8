"""Repository hygiene: no paths of the machine the code was written on, one reference-environment location,
model code shipped as remote code that imports only the standard library, torch and transformers."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".sh", ".md", ".json", ".yaml", ".yml", ".toml", ".ipynb", ".txt", ".cfg"}
# written in pieces, so that this file does not match itself
MACHINE_PATH = re.compile("|".join(["/" + "work/", "/" + "root/", r"/home/\w", "venv" + "457"]))
# a spec file that is not in the repository, or its section sign (also as a JSON escape)
OUTSIDE_SPEC = re.compile("|".join(["MEGA_" + "SPEC", chr(0xA7), re.escape("\\" + "u00a7")]))


def _tracked_text_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / name for name in listed.splitlines() if Path(name).suffix in TEXT_SUFFIXES]


def test_no_machine_paths_in_committed_files() -> None:
    hits = []
    for path in _tracked_text_files():
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not hits, "machine paths in committed files:\n" + "\n".join(hits)


def _reference_python_of(script: Path, env: dict[str, str]) -> Path:
    source = script.read_text()
    # the helper only: importing the scripts would need transformers 4.57.1 (or start a benchmark)
    start = source.index("def reference_python()")
    end = source.index("\n\n\n", start)
    namespace: dict = {"Path": Path, "os": os}
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        exec(compile(source[start:end], str(script), "exec"), namespace)  # noqa: S102
        return namespace["reference_python"]()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize("override", [False, True])
def test_scripts_find_the_environment_reference_env_sh_creates(tmp_path, override: bool) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    venv = tmp_path / "cache" / "mega2bart" / "venv-transformers-4.57.1"
    if override:
        venv = tmp_path / "elsewhere"
        env["MEGA2BART_REFERENCE_VENV"] = str(venv)
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python"  # passes the version check, so nothing is installed
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    printed = subprocess.run(
        ["bash", str(REPO / "scripts" / "reference_env.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert printed == str(fake)
    for script in ("scripts/make_fixtures.py", "scripts/check_roundtrip_457.py", "benchmarks/bench_encoder.py"):
        assert _reference_python_of(REPO / script, env) == fake, script


def test_citations_point_into_the_repository() -> None:
    """Comments and docs cite docs/mega.md's sections, never an outside spec; every cited section exists."""
    headings = [
        line.lstrip("#").strip()
        for line in (REPO / "docs" / "mega.md").read_text().splitlines()
        if line.startswith("## ")
    ]
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
    outside, unknown = [], []
    for path in _tracked_text_files():
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if OUTSIDE_SPEC.search(text):
            outside.append(str(path.relative_to(REPO)))
        unknown += [
            f"{path.relative_to(REPO)}: #{anchor}"
            for anchor in re.findall(r"docs/mega\.md#([\w-]+)", text)
            if anchor not in anchors
        ]
    assert not outside, f"files citing a spec outside the repository: {outside}"
    assert not unknown, f"citations of sections docs/mega.md does not have: {unknown} (it has {sorted(anchors)})"


# ----------------------------------------------------------------------------- import-clean remote code

# what the files shipped as remote code may import: a saved model directory is loaded with
# `trust_remote_code=True` where only torch and transformers can be assumed (no mega2bart, no numpy)
REMOTE_CODE_ALLOWED = {"torch", "transformers", "__future__"}


def _foreign_imports(source: str, siblings: set[str]) -> list[str]:
    """`import ...` / `from ... import` statements of `source` (anywhere in it) that reach beyond the
    standard library, torch, transformers and the module names `siblings` (relative imports)."""
    foreign = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots = [(alias.name, alias.name.split(".")[0]) for alias in node.names]
            foreign += [name for name, root in roots if root not in sys.stdlib_module_names | REMOTE_CODE_ALLOWED]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            root = (node.module or "").split(".")[0]
            if root not in sys.stdlib_module_names | REMOTE_CODE_ALLOWED:
                foreign.append(node.module or "")
        elif isinstance(node, ast.ImportFrom):  # relative: only the files shipped beside it
            targets = [node.module] if node.module else [alias.name for alias in node.names]
            dots = "." * node.level
            foreign += [dots + target for target in targets if target.split(".")[0] not in siblings or node.level > 1]
    return foreign


def test_remote_code_files_import_only_the_standard_library_torch_and_transformers() -> None:
    from mega2bart.builder.remote_code import REMOTE_CODE_SOURCES

    siblings = {Path(name).stem for name in REMOTE_CODE_SOURCES}
    problems = [
        f"{source.relative_to(REPO)} (shipped as {name}) imports {module!r}"
        for name, source in REMOTE_CODE_SOURCES.items()
        for module in _foreign_imports(source.read_text(encoding="utf-8"), siblings)
    ]
    assert not problems, (
        "remote code must import only the standard library, torch, transformers and the files shipped beside it "
        "(a saved model is loaded without mega2bart); move these imports out of the model code:\n" + "\n".join(problems)
    )


@pytest.mark.parametrize(
    "statement, found",
    [
        ("import numpy as np", ["numpy"]),
        ("from mega2bart.documents import read_documents", ["mega2bart.documents"]),
        ("def f():\n    import yaml", ["yaml"]),
        ("from ..tokenization import x", ["..tokenization"]),
        ("from .presets import TINY", [".presets"]),
        ("import math, torch.nn\nfrom transformers import PreTrainedModel\nfrom .modeling_mega import MegaModel", []),
    ],
)
def test_the_remote_code_import_check_finds_foreign_imports(statement: str, found: list[str]) -> None:
    assert _foreign_imports(statement, {"modeling_mega", "configuration_mega"}) == found
