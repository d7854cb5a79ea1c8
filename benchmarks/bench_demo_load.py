"""The demo page under load (issue 32): concurrent clients through its HTTP API, loopback only, the tiny model.

A benchmark with checks: every request answered, none lost or mixed up, the server's memory flat. It prints a
table (latencies, throughput, the server's RSS through the run) and exits 1 when a check fails.

    .venv/bin/python benchmarks/bench_demo_load.py                                # 8 clients x 5 requests
    .venv/bin/python benchmarks/bench_demo_load.py --json load.json --markdown load.md

The server is the command a user runs, `mega2bart demo MODEL --max-input-tokens 96`, in a subprocess on 127.0.0.1
at a free port (a 96-token context, so that documents go through windows and a summary of summaries), with a tiny
random model built here (`--model` for another). Each client is one `gradio_client.Client` (its own session) in
its own thread, sending its requests one after the other; the server runs one at a time and queues the rest.
Request k of client c sends a document of its own length (`sentences(c, k)`), so each answer can be matched to
its request.

Checks:
- answered: every call returns a summary within `--timeout` seconds, no error;
- none lost or mixed up: each answer's record counts the tokens of the document that call sent (the model's
  tokenizer, here), and its status says the run is done;
- memory flat: the server's RSS, sampled every 0.2 s, after the first round of requests (one per client; what
  the first runs allocate for good is counted there) and at the end differ by at most `--rss-growth-mib`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _harness import GIB, fmt, machine_summary, rss_of, worker_env, write_report  # noqa: E402

SETTINGS = {"num_beams": 1, "max_new_tokens": 8, "min_new_tokens": 2, "no_repeat_ngram_size": 0, "length_penalty": 1.0}
SENTENCE = "Sentence {i} of document {name} describes topic {topic} of the synthetic report."


def sentences(client: int, request: int, requests: int, longest: int) -> int:
    """The number of sentences of request `request` of client `client`: 1 to `longest`, varied across calls."""
    return 1 + (client * requests + request) % longest


def document(client: int, request: int, count: int) -> str:
    name = f"{client}-{request}"
    return " ".join(SENTENCE.format(i=i, name=name, topic=i % 5) for i in range(count))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_tiny(folder: Path) -> Path:
    model = folder / "tiny"
    command = [sys.executable, "-m", "mega2bart.cli", "build", str(model), "--preset", "tiny", "--quiet"]
    subprocess.run(command, check=True, capture_output=True, env=worker_env(1, repo_on_path=True))
    return model


def start_server(model: Path, port: int, log: Path, threads: int) -> subprocess.Popen:
    """`mega2bart demo` on 127.0.0.1:`port`, its output in `log`; returns once the page answers."""
    command = [sys.executable, "-m", "mega2bart.cli", "demo", str(model), "--port", str(port)]
    command += ["--max-input-tokens", "96", "--window-overlap", "16"]
    handle = log.open("w")
    server = subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, env=worker_env(threads, repo_on_path=True)
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not answer within 300 s: {log.read_text()[-2000:]}")


class RssSampler(threading.Thread):
    """The server's RSS every `interval` seconds, with the time and the number of answers so far."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int, float]] = []  # (seconds, answers, RSS GB)
        self.answers = 0
        self.stop = threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.start_time, self.answers, rss_of(self.pid)))
            self.stop.wait(self.interval)


def run_load(
    model: Path,
    *,
    clients: int = 8,
    requests: int = 5,
    longest: int = 24,
    timeout: float = 300.0,
    threads: int = 1,
    log: Path | None = None,
) -> dict[str, Any]:
    """Serve `model` with `mega2bart demo`, run `clients` x `requests` calls through gradio_client, stop the
    server; returns the report (answers, failures, mismatches, latencies, RSS samples)."""
    from gradio_client import Client
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    port = free_port()
    log = log or Path(tempfile.mkdtemp(prefix="demo-load-")) / "server.log"
    server = start_server(model, port, log, threads)
    url = f"http://127.0.0.1:{port}/"
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    lock = threading.Lock()
    try:
        warm = Client(url, verbose=False).predict(text=document(0, -1, 3), file=None, **SETTINGS, api_name="/summarize")
        assert warm[5].startswith("done in"), warm[5]
        sampler = RssSampler(server.pid)
        sampler.start()

        def one_client(c: int) -> None:
            client = Client(url, verbose=False)
            for k in range(requests):
                text = document(c, k, sentences(c, k, requests, longest))
                start = time.monotonic()
                try:
                    job = client.submit(text=text, file=None, **SETTINGS, api_name="/summarize")
                    summary, windows, levels, json_path, _, status = job.result(timeout=timeout)
                    record = json.loads(Path(json_path).read_text())
                except Exception as exc:  # noqa: BLE001 (a failed call is a result here)
                    with lock:
                        failures.append(f"client {c} request {k}: {type(exc).__name__}: {exc}")
                    continue
                expected = len(tokenizer(text, add_special_tokens=False)["input_ids"])
                with lock:
                    answers.append(
                        {
                            "client": c,
                            "request": k,
                            "seconds": time.monotonic() - start,
                            "tokens_sent": expected,
                            "tokens_answered": record["num_tokens"],
                            "windows": len(windows["data"]),
                            "levels": record["levels"],
                            "done": status.startswith("done in") and summary == record["summary"],
                        }
                    )
                    sampler.answers += 1

        started = time.monotonic()
        workers = [threading.Thread(target=one_client, args=(c,)) for c in range(clients)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        wall = time.monotonic() - started
        time.sleep(0.5)
        sampler.stop.set()
        sampler.join()
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    return {
        "clients": clients,
        "requests": requests,
        "calls": clients * requests,
        "answers": answers,
        "failures": failures,
        "wall_seconds": wall,
        "rss_samples": sampler.samples,
    }


def summarize_run(report: dict[str, Any], rss_growth_mib: float) -> dict[str, Any]:
    """The checks and figures of `run_load`'s report."""
    answers, samples, clients = report["answers"], report["rss_samples"], report["clients"]
    mixed = [a for a in answers if a["tokens_sent"] != a["tokens_answered"] or not a["done"]]
    after_first = [rss for _, done, rss in samples if done >= clients] or [samples[-1][2]]
    first_round, end = after_first[0], samples[-1][2]
    growth_mib = (end - first_round) * GIB / 2**20
    latencies = sorted(a["seconds"] for a in answers)
    return {
        "answered": len(answers),
        "calls": report["calls"],
        "failures": report["failures"],
        "mixed_up": mixed,
        "windows_per_call": [min(a["windows"] for a in answers), max(a["windows"] for a in answers)] if answers else [],
        "latency_s": {
            "median": statistics.median(latencies) if latencies else None,
            "p95": latencies[int(0.95 * (len(latencies) - 1))] if latencies else None,
            "max": latencies[-1] if latencies else None,
        },
        "wall_s": report["wall_seconds"],
        "calls_per_minute": 60 * len(answers) / report["wall_seconds"] if report["wall_seconds"] else None,
        "rss_gb": {
            "before_load": samples[0][2],
            "after_first_round": first_round,
            "peak": max(rss for _, _, rss in samples),
            "end": end,
        },
        "rss_growth_mib": growth_mib,
        "rss_growth_limit_mib": rss_growth_mib,
        "passed": len(answers) == report["calls"]
        and not report["failures"]
        and not mixed
        and growth_mib <= rss_growth_mib,
    }


def markdown(summary: dict[str, Any], report: dict[str, Any]) -> str:
    rss, latency = summary["rss_gb"], summary["latency_s"]
    samples = report["rss_samples"]
    marks = sorted({done for _, done, _ in samples})
    by_answers = [
        f"{done}: {max(r for _, d, r in samples if d == done):.3f}" for done in marks[:: max(1, len(marks) // 8)]
    ]
    lines = [
        f"{report['clients']} clients x {report['requests']} requests: {summary['answered']}/{summary['calls']} answered, "
        f"{len(summary['failures'])} failed, {len(summary['mixed_up'])} mixed up; "
        f"{'PASS' if summary['passed'] else 'FAIL'}",
        "",
        "| wall s | calls/min | latency median s | p95 s | max s | windows per call | RSS before GB | after 1st round | "
        "peak | end | growth MiB (limit) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {fmt(summary['wall_s'], 1)} | {fmt(summary['calls_per_minute'], 1)} | {fmt(latency['median'])} | "
        f"{fmt(latency['p95'])} | {fmt(latency['max'])} | {'-'.join(map(str, summary['windows_per_call']))} | "
        f"{fmt(rss['before_load'], 3)} | {fmt(rss['after_first_round'], 3)} | {fmt(rss['peak'], 3)} | "
        f"{fmt(rss['end'], 3)} | {fmt(summary['rss_growth_mib'], 1)} ({fmt(summary['rss_growth_limit_mib'], 0)}) |",
        "",
        "Server RSS (GB, the largest sample) by answers so far: " + ", ".join(by_answers),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="A model directory (default: a tiny random one built here).")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=5, help="Requests per client, one after the other.")
    parser.add_argument("--longest", type=int, default=24, help="Most sentences in a document (about 15 tokens each).")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds one call may take, queue included.")
    parser.add_argument("--threads", type=int, default=1, help="The server's torch threads.")
    parser.add_argument("--rss-growth-mib", type=float, default=16.0, help="Most RSS growth after the first round.")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-load-") as folder:
        model = args.model or build_tiny(Path(folder))
        report = run_load(
            model,
            clients=args.clients,
            requests=args.requests,
            longest=args.longest,
            timeout=args.timeout,
            threads=args.threads,
            log=Path(folder) / "server.log",
        )
    summary = summarize_run(report, args.rss_growth_mib)
    report.update(summary=summary, machine=machine_summary(), loadavg_at_end=os.getloadavg())
    report["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write_report(report, markdown(summary, report), args.markdown, args.json)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
