"""What every benchmark here shares: one measurement per fresh process, watched from outside, and the worker's
side of it (not run by hand).

Driver side (`bench_encoder.py`, `bench_generate.py`, `bench_plan.py`, `bench_long_context.py` with `long_context/`):
- `worker_env`: the environment a worker or a `mega2bart` command starts with (OMP threads pinned);
- `run_worker`: start a worker, sample its RSS every 0.2 s, kill it past a time-out or an RSS limit, and measure
  the other load on the machine while it ran (cores busy with anything else, from /proc/stat), then read its
  `BENCH_RESULT <json>` line;
- `machine_info` / `machine_summary`: the CPU, memory and library versions a results file records;
- `fmt` and `write_report`: the markdown cells and the --markdown / --json files.

Worker side (`_worker.py`, `_generate_worker.py`, `_plan_worker.py`): the peak-RSS watermark (VmHWM, reset through
/proc/self/clear_refs so a phase's own peak can be read), thread pinning and the result line.

Workers run under the reference environment too (`_worker.py` with the transformers 4.57.1 port), so this module
imports only the standard library at module level; torch and transformers are imported where they are used.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "BENCH_RESULT "
GIB = 1024**3
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# worker side: memory probes of this process, threads, the result line
# ------------------------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    """A `VmRSS:`/`VmHWM:` value of /proc/self/status in KiB (None off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_gb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024 / GIB


def hwm_gb() -> float | None:
    kib = _status_kib("VmHWM")
    return None if kib is None else kib * 1024 / GIB


def _required_bytes(field: str) -> int:
    kib = _status_kib(field)
    if kib is None:
        raise RuntimeError(f"no {field} in /proc/self/status")
    return kib * 1024


def rss_bytes() -> int:
    """The process's RSS in bytes; raises where /proc/self/status has none (a measurement that needs it)."""
    return _required_bytes("VmRSS")


def hwm_bytes() -> int:
    """The process's peak RSS since start or the last `reset_hwm`, in bytes; raises where there is none."""
    return _required_bytes("VmHWM")


def reset_hwm() -> bool:
    """Reset the process's peak-RSS watermark to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def reset_hwm_or_fail() -> None:
    """`reset_hwm` for a measurement that means nothing without it: raises where the reset is refused."""
    if not reset_hwm():
        raise RuntimeError("cannot reset the peak RSS: /proc/self/clear_refs is not writable")


def maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux


def pin_threads(threads: int | None) -> None:
    """torch's intra-op threads: `threads`, or every core when the spec leaves it at 0 / None."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def run_info(spec: dict[str, Any]) -> dict[str, Any]:
    """What every worker result records besides its measurements: the spec, the threads and the versions."""
    import torch
    import transformers

    return {
        "spec": spec,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
    }


def print_result(result: dict[str, Any]) -> None:
    """The worker's one result line on stdout, which `run_worker` reads."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# driver side: starting and watching workers
# ------------------------------------------------------------------------------------------------


def worker_env(threads: int, *, repo_on_path: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment with OMP threads pinned to `threads` (and the repository first on PYTHONPATH
    when `repo_on_path`, so a worker imports this checkout's mega2bart), plus `extra`."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), **extra)
    if repo_on_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def rss_of(pid: int) -> float:
    """Another process's RSS in GB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


def busy_cpu_s() -> float:
    """CPU-seconds the whole machine has been busy (all cores; steal included), from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def default_mem_limit_gb() -> float:
    """The default RSS at which a worker is killed: MemAvailable now - 1 GB (at least 2 GB; 8 GB off Linux)."""
    try:
        with open("/proc/meminfo") as handle:
            meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 / GIB for line in handle}
        return max(2.0, meminfo.get("MemAvailable", meminfo["MemTotal"]) - 1.0)
    except (OSError, ValueError, IndexError, KeyError):
        return 8.0


@dataclass
class WorkerRun:
    """One watched worker: its output, how it ended, and what the machine did meanwhile."""

    stdout: str
    stderr: str
    returncode: int
    killed: str | None  # why it was killed, None when it ended by itself
    max_rss_gb: float  # the largest RSS sampled (every 0.2 s), for runs that end without a result
    wall_s: float
    other_load: float  # cores' worth of CPU used by anything but this worker while it ran

    def result(self) -> dict[str, Any] | None:
        """The worker's last `BENCH_RESULT` line, parsed (None when there is none)."""
        lines = [line for line in self.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
        return json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else None

    def outcome(self) -> dict[str, Any]:
        """{"result": ...} when the worker exited 0 with a result; otherwise {"error": why (the last lines of
        its stderr when it failed by itself), "max_rss_seen_gb": ...}."""
        result = None if self.killed or self.returncode != 0 else self.result()
        if result is not None:
            return {"result": result}
        tail = self.stderr.strip().splitlines()[-6:]
        reason = self.killed or f"exit code {self.returncode}"
        return {
            "error": reason + (": " + " | ".join(tail) if tail and not self.killed else ""),
            "max_rss_seen_gb": self.max_rss_gb,
        }


def run_worker(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float,
    mem_limit_gb: float | None = None,
) -> WorkerRun:
    """Run `command` in a fresh process; kill it past `timeout` seconds or past `mem_limit_gb` of RSS (None: no
    limit). The kill message names the options that set them (--timeout, --mem-limit-gb)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        busy0, children0 = busy_cpu_s(), children_cpu_s()
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        killed, max_rss = None, 0.0
        while proc.poll() is None:
            time.sleep(0.2)
            rss = rss_of(proc.pid)
            max_rss = max(max_rss, rss)
            if mem_limit_gb is not None and rss > mem_limit_gb:
                killed = f"killed: RSS {rss:.1f} GB passed --mem-limit-gb {mem_limit_gb:.1f}"
            elif time.perf_counter() - start > timeout:
                killed = f"killed: ran past --timeout {timeout:.0f} s"
            if killed:
                proc.kill()
                proc.wait()
                break
        wall = time.perf_counter() - start
        # cores' worth of CPU used by anything but this worker while it ran: > ~0.2 means the timings are noisy
        other_load = max(0.0, (busy_cpu_s() - busy0) - (children_cpu_s() - children0)) / wall
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return WorkerRun(stdout, stderr, proc.returncode, killed, max_rss, wall, other_load)


# ------------------------------------------------------------------------------------------------
# the machine
# ------------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The first "model name" of /proc/cpuinfo ("unknown" where there is none)."""
    try:
        return next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        return "unknown"


def machine_summary() -> dict[str, Any]:
    """The short record: CPU model, cores, python version."""
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version()}


def machine_info(port_python: str | None) -> dict[str, Any]:
    """The full record: lscpu's CPU lines, memory, bf16 hardware, torch/transformers versions (and the reference
    environment's, from `port_python`), the load average at start."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Core(s) per socket", "Socket(s)", "Thread(s) per core"):
                info[key.strip()] = value.strip()
    except OSError:
        pass
    info["cpu_count"] = os.cpu_count()
    try:
        flags = set()
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
        info["cpu_bf16_flags"] = sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile", "avx512f", "avx2"})
        with open("/proc/meminfo") as handle:
            mem = {line.split(":")[0]: int(line.split()[1]) for line in handle}
        info["mem_total_gb"] = mem["MemTotal"] * 1024 / GIB
        info["mem_available_gb_at_start"] = mem.get("MemAvailable", 0) * 1024 / GIB
    except OSError:
        pass
    import torch
    import transformers

    info["torch"] = torch.__version__
    info["transformers"] = transformers.__version__
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["mkldnn_available"] = torch.backends.mkldnn.is_available()
    try:
        info["mkldnn_bf16_supported"] = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        info["mkldnn_bf16_supported"] = None
    flags = set(info.get("cpu_bf16_flags", []))
    info["bf16_matmul_hw"] = bool(flags & {"avx512_bf16", "amx_bf16"}) or bool(info["mkldnn_bf16_supported"])
    if port_python:
        probe = subprocess.run(
            [port_python, "-c", "import torch, transformers; print(torch.__version__, transformers.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["port_versions"] = probe.stdout.strip() or f"unavailable: {probe.stderr.strip()[-200:]}"
    info["loadavg_at_start"] = os.getloadavg()
    return info


# ------------------------------------------------------------------------------------------------
# reports
# ------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    """A markdown table cell: "–" for nothing; a float of 1,000 or more with thousands separators and no
    decimals, a smaller one with `digits` decimals."""
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def write_report(report: dict[str, Any], text: str, markdown: Path | None, json_path: Path | None) -> None:
    """Print the markdown `text` after a blank line, and write it and the whole `report` where asked."""
    print()
    print(text)
    if markdown:
        markdown.write_text(text)
    if json_path:
        json_path.write_text(json.dumps(report, indent=1))
