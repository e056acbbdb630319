"""Requests/s and p50/p95 latency of `genlab serve` for a VAE and a GPT run at 1, 4 and 16 concurrent clients,
with dynamic batching on (max_batch_size=16) and off (1). Each configuration is a real server in a subprocess,
called over HTTP by client threads.

    python benchmarks/serve.py --vae outputs/train/runs/<vae run> --gpt outputs/train/runs/<gpt run>

VAE requests ask for one image with a seed (latents are decoded together when batched); GPT requests ask for
50 tokens of "ROMEO." without a seed (requests of one prompt length and settings share one generate call).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REQUESTS = {
    "vae": lambda i: {"n": 1, "seed": i},
    "gpt": lambda i: {"prompt": "ROMEO.\n", "max_new_tokens": 50},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, body: dict) -> tuple[float, int]:
    start = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=300) as response:
        batch = json.loads(response.read())["batch"]
    return time.perf_counter() - start, batch


def start(run: str, max_batch_size: int, threads: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "genlab.cli", "serve", f"run={run}", f"port={port}", f"threads={threads}",
         f"max_batch_size={max_batch_size}", "batch_timeout=0.005", "device=cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return process, port
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the server for {run} did not start")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vae", required=True)
    parser.add_argument("--gpt", required=True)
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server's worker")
    args = parser.parse_args()
    print("| model | batching | clients | requests/s | p50 ms | p95 ms | mean batch |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for family, run in (("vae", args.vae), ("gpt", args.gpt)):
        for max_batch_size in (16, 1):
            process, port = start(str(Path(run).absolute()), max_batch_size, args.threads)
            try:
                for _ in range(4):  # warm-up
                    post(port, REQUESTS[family](0))
                for clients in (1, 4, 16):
                    with ThreadPoolExecutor(clients) as pool:
                        begin = time.perf_counter()
                        results = list(
                            pool.map(
                                post, [port] * args.requests, map(REQUESTS[family], range(args.requests))
                            )
                        )
                        wall = time.perf_counter() - begin
                    latencies = sorted(1000 * t for t, _ in results)
                    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]
                    batch = statistics.mean(b for _, b in results)
                    label = "on (16)" if max_batch_size > 1 else "off"
                    print(f"| {family} | {label} | {clients} | {args.requests / wall:.1f} | "
                          f"{statistics.median(latencies):.0f} | {p95:.0f} | {batch:.1f} |", flush=True)  # fmt: skip
            finally:
                stop(process)


if __name__ == "__main__":
    main()
