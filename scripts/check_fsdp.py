"""Sharded training against one process: the same losses, a checkpoint that resumes and loads.

    python scripts/check_fsdp.py                 # FSDP2 via configs/accelerate-fsdp.yaml; needs CUDA GPUs
    python scripts/check_fsdp.py --mode ddp      # the same check for DDP (torchrun); runs on 2 CPU cores

On the CPU, accelerate runs an FSDP config as plain DDP (mega2bart refuses that, see
`TrainConfig.requested_sharding`), so FSDP can only be checked on GPUs; `--mode ddp` checks this
script itself where there are none. Steps, on the tiny preset with dropout off (deterministic):

1. one process: `mega2bart train`, 3 steps of 4 documents (batch 1 x 4 accumulation steps);
2. N processes (`--processes`, default: 2, or the GPU count if lower): the same 3 steps of the same
   4 documents (batch 1 x 4/N accumulation steps per process), FSDP2 with MEGA blocks and BART
   decoder layers as shard units and FSDP's activation checkpointing (or DDP);
3. the logged loss of every step and the final weights agree within the tolerances below;
4. both runs resume from checkpoint-3 for a 4th step, whose losses agree too;
5. the sharded run's checkpoint-3 and final directory load with `load_mega2bart` and generate.

Tolerances (float32 everywhere, bf16 off): the runs add the same per-token losses and gradients
in another order (per-process partial sums, then an all-reduce or reduce-scatter), which changes
the result by a few float32 roundings (2**-24 relative each) of sums of ~1e5 terms; four AdamW
steps carry that into the weights at the scale of lr x 1e-4 or so. `--rtol` (loss, default 1e-4)
and `--atol` (weights, default 1e-5) sit far above that and far below what a real defect does (a
gradient missing from one shard or a wrong normalisation moves the step-2 loss by > 1e-3 relative).
The attention key biases are the exception: their gradient is zero by symmetry, so it is rounding
noise that AdamW turns into steps of up to lr; they are held to 3 x lr only. Measured with `--mode
ddp` on 2 CPU processes (two runs): losses within 1e-7 relative, weights within 1e-6.
Exit status 0 only if every check passes; the numbers are printed either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = 4  # one optimiser step = all of them, whatever the number of processes
LEARNING_RATE = 0.003


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(command: list[str], env: dict[str, str]) -> None:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")


def _train_args(model: Path, output: Path, steps: int, accumulation: int) -> list[str]:
    return [
        "train",
        "--model",
        str(model),
        "--output-dir",
        str(output),
        "--dataset",
        "aclsum",
        "--max-steps",
        str(steps),
        "--batch-size",
        "1",
        "--gradient-accumulation-steps",
        str(accumulation),
        "--max-train-samples",
        str(DOCUMENTS),
        "--max-source-length",
        "256",
        "--max-target-length",
        "32",
        "--eval-split",
        "none",
        "--save-steps",
        "3",
        "--learning-rate",
        str(LEARNING_RATE),
        "--bf16",
        "false",
        "--no-gradient-checkpointing",
        "--set",
        "warmup_steps=0",
        "--set",
        "logging_steps=1",
        "--quiet",
    ]


def _launcher(mode: str, processes: int) -> list[str]:
    python_dir = Path(sys.executable).parent
    if mode == "ddp":
        torchrun = python_dir / "torchrun"
        return [
            str(torchrun) if torchrun.exists() else "torchrun",
            "--nnodes",
            "1",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
            "-m",
            "mega2bart.cli",
        ]
    accelerate = python_dir / "accelerate"
    return [
        str(accelerate) if accelerate.exists() else "accelerate",
        "launch",
        "--config_file",
        str(REPO / "configs" / "accelerate-fsdp.yaml"),
        "--num_processes",
        str(processes),
        "--mixed_precision",
        "no",
        "--main_process_port",
        str(_free_port()),
        "-m",
        "mega2bart.cli",
    ]


def _losses(run: Path) -> dict[int, float]:
    history = json.loads((run / "metrics.json").read_text())["log_history"]
    return {entry["step"]: entry["loss"] for entry in history if "loss" in entry}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("fsdp", "ddp"), default="fsdp")
    parser.add_argument("--processes", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="Kept afterwards (default: a temporary folder).")
    parser.add_argument("--rtol", type=float, default=1e-4, help="Relative tolerance of each step's loss.")
    parser.add_argument("--atol", type=float, default=1e-5, help="Absolute tolerance of the final weights.")
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    gpus = torch.cuda.device_count()
    if args.mode == "fsdp" and gpus == 0:
        sys.exit("--mode fsdp needs CUDA GPUs (accelerate runs FSDP on the CPU as DDP); --mode ddp runs on the CPU")
    processes = args.processes or (min(2, gpus) if args.mode == "fsdp" else 2)
    if DOCUMENTS % processes:
        sys.exit(f"--processes ({processes}) must divide {DOCUMENTS}")
    if args.mode == "fsdp" and processes == 1:
        print("note: one GPU, so FSDP runs with 1 process (wrapping, checkpointing and saving; no sharding)")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="check_fsdp_"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if args.mode == "ddp":
        env["CUDA_VISIBLE_DEVICES"] = ""  # both runs on the CPU

    model = workdir / "model"
    if not model.exists():
        _run([sys.executable, "-m", "mega2bart.cli", "build", str(model), "--preset", "tiny"], env)
        config = json.loads((model / "config.json").read_text())
        for part in ("encoder", "decoder"):  # dropout off: the runs must be deterministic to compare
            for key, value in config[part].items():
                if "dropout" in key and isinstance(value, (int, float)):
                    config[part][key] = 0.0
        (model / "config.json").write_text(json.dumps(config, indent=2))
    single, sharded = workdir / "single", workdir / args.mode
    for run in (single, sharded):
        shutil.rmtree(run, ignore_errors=True)
    plain = [sys.executable, "-m", "mega2bart.cli"]
    _run([*plain, *_train_args(model, single, 3, DOCUMENTS)], env)
    _run([*_launcher(args.mode, processes), *_train_args(model, sharded, 3, DOCUMENTS // processes)], env)

    failures = []
    a, b = _losses(single), _losses(sharded)
    for step in (1, 2, 3):
        diff = abs(a[step] - b[step]) / abs(a[step])
        print(f"step {step}: loss one process {a[step]:.8f}, {processes} processes {b[step]:.8f}, relative {diff:.2e}")
        if diff > args.rtol:
            failures.append(f"step {step} loss differs by {diff:.2e} > rtol {args.rtol}")
    final_a, final_b = load_file(str(single / "model.safetensors")), load_file(str(sharded / "model.safetensors"))
    missing = sorted(set(final_a) ^ set(final_b))
    if missing:
        failures.append(f"the final weights have different keys: {missing[:5]}")
    # attention key biases get a gradient that is zero by symmetry (softmax ignores a shift shared by all
    # keys), i.e. pure rounding noise, which AdamW scales up to steps of about lr: they are only bounded
    noise_only = [k for k in final_a if k.endswith("k_proj.bias")]
    worst = max(
        ((final_a[k].double() - final_b[k].double()).abs().max().item(), k)
        for k in final_a
        if k in final_b and k not in noise_only
    )
    print(f"final weights: largest difference {worst[0]:.2e} in {worst[1]}")
    if worst[0] > args.atol:
        failures.append(f"final weights differ by {worst[0]:.2e} > atol {args.atol} ({worst[1]})")
    bound = 3 * LEARNING_RATE
    loose = max(((final_a[k].double() - final_b[k].double()).abs().max().item(), k) for k in noise_only)
    print(f"attention key biases: largest difference {loose[0]:.2e} (bound 3 steps x lr = {bound:.1e})")
    if loose[0] > bound:
        failures.append(f"{loose[1]} differs by {loose[0]:.2e} > {bound:.1e}")

    # resume both from checkpoint-3 for one more step
    _run([*plain, *_train_args(model, single, 4, DOCUMENTS)], env)
    _run([*_launcher(args.mode, processes), *_train_args(model, sharded, 4, DOCUMENTS // processes)], env)
    a, b = _losses(single), _losses(sharded)
    if 4 not in b:
        failures.append(f"the resumed {args.mode} run logged no step 4 (steps {sorted(b)})")
    else:
        diff = abs(a[4] - b[4]) / abs(a[4])
        print(f"step 4 (resumed): loss one process {a[4]:.8f}, {processes} processes {b[4]:.8f}, relative {diff:.2e}")
        if diff > args.rtol:
            failures.append(f"resumed step 4 loss differs by {diff:.2e} > rtol {args.rtol}")

    from mega2bart.builder import load_mega2bart

    for directory in (sharded / "checkpoint-3", sharded):
        print(f"{directory.name}: {sorted(p.name for p in directory.iterdir())}")
        try:
            loaded, tokenizer = load_mega2bart(directory)
            with torch.inference_mode():
                ids = loaded.generate(
                    **tokenizer(["A short test document."], return_tensors="pt"),
                    max_new_tokens=4,
                    min_new_tokens=1,
                    num_beams=1,
                )
            print(f"{directory.name}: loads as a normal model and generates {ids.shape[1]} tokens")
        except Exception as exc:  # noqa: BLE001 -- reported, then the exit status says it failed
            failures.append(f"{directory} does not load: {type(exc).__name__}: {exc}")

    print(f"work folder: {workdir}")
    for failure in failures:
        print("FAILED:", failure)
    print("all checks passed" if not failures else f"{len(failures)} checks failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
