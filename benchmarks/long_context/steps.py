"""Running the probe's steps: a record of each finished step so that a rerun resumes where the last one stopped
(`Steps`), a `mega2bart` command in a subprocess with its threads pinned (`run_cli`), and what a training run left
(its steps and losses)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import REPO, worker_env


class Steps:
    """Each finished step (data, build, a `mega2bart` command) leaves a record in OUT/done/. A rerun into the
    same OUT skips every step whose record matches: same settings and the same steps before it (each record
    holds a digest of the previous one), so an interrupted run loses only the step it was in. `fresh`
    forgets the records. `seconds` holds every step's seconds (run now or reused), by name, in the order run."""

    def __init__(self, out: Path, fresh: bool) -> None:
        self.directory = out / "done"
        if fresh:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.seconds: dict[str, float] = {}

    @staticmethod
    def key(what: Any, after: str) -> str:
        return hashlib.sha256(json.dumps({"what": what, "after": after}, sort_keys=True).encode()).hexdigest()

    def started(self, name: str, key: str) -> bool:
        """Whether an earlier run started this very step (same key) and did not finish it; marks it started."""
        path = self.directory / f"{name.replace(' ', '-')}.started"
        before = path.read_text(encoding="utf-8") if path.exists() else None
        path.write_text(key, encoding="utf-8")
        return before == key

    def run(self, name: str, what: Any, after: str, action: Callable[[], Any]) -> tuple[Any, float, str]:
        """(action's result, its seconds, this step's digest for the steps after it)."""
        key = self.key(what, after)
        path = self.directory / f"{name.replace(' ', '-')}.json"
        if path.exists():
            done = json.loads(path.read_text(encoding="utf-8"))
            if done.get("key") == key:
                print(f"{name}: done in an earlier run ({done['seconds']:.0f} s), reused; --fresh redoes it")
                self.seconds[name] = done["seconds"]
                return done["result"], done["seconds"], key
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps({"key": key, "seconds": seconds, "result": result}), encoding="utf-8")
        os.replace(partial, path)
        self.seconds[name] = seconds
        return result, seconds, key


def run_cli(args: list[str], log: Path, threads: int) -> float:
    """Run `mega2bart ARGS` in a subprocess (this checkout first on PYTHONPATH); returns its seconds."""
    env = worker_env(threads, repo_on_path=True, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "mega2bart.cli", *args]
    print(f"$ mega2bart {shlex.join(args)}  (log: {log})", flush=True)
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        done = subprocess.run(command, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise SystemExit(f"mega2bart {args[0]} failed (exit {done.returncode}); last lines of {log}:\n{tail}")
    print(f"  done in {seconds:.0f} s", flush=True)
    return seconds


def trained_steps(output: Path) -> int:
    """The optimiser steps a `mega2bart train` run took (fewer than its max where it stopped at its loss)."""
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))["run"]["global_step"]


def seconds_per_step(output: Path) -> float:
    """The mean seconds of one optimiser step of a `mega2bart train` run: the trainer's runtime (loading and saving
    left out) over the steps it took, those before the checkpoint it resumed from left out."""
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    runtime = next(e["train_runtime"] for e in reversed(metrics.get("log_history", [])) if "train_runtime" in e)
    run = metrics["run"]
    resumed = re.search(r"checkpoint-(\d+)", str(run.get("resumed_from") or ""))
    return runtime / max(1, run["global_step"] - (int(resumed.group(1)) if resumed else 0))


def training_losses(output: Path) -> list[tuple[int, float]]:
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    return [(e["step"], e["loss"]) for e in metrics.get("log_history", []) if "loss" in e]
