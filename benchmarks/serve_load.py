"""Load test of serving: concurrent clients fuse 256x256 pairs on ``dig2dig serve`` (Triton from the
nvidia-pytriton wheel, on loopback), against the same pairs fused one after another by one local process.

Per number of clients: throughput (pairs/s), p50/p90 latency, the UNet's own batch statistics from the
server (calls, images, images per call, calls by batch size) and whether every reply equals the local
fusion (within one grey level). Bounded: each client sends ``--requests`` pairs, and a level stops
sending after ``--time-limit`` seconds. Only 127.0.0.1 is contacted.

    python benchmarks/serve_load.py                      # 1, 4 and 16 clients, ivf defaults, 3 pairs each
    python benchmarks/serve_load.py --clients 1,4 --requests 2 --steps 2
"""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import cv2
import numpy as np

from dig2dig import Fuser
from dig2dig.export.triton import UNET, write_repository
from dig2dig.runtime.client import TritonClient
from dig2dig.runtime.settings import resolve
from dig2dig.serve import TritonServer, free_ports, serving_python

from machine import bundled_prior, machine_line

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "pairs"
TOLERANCE = 1  # grey levels a served pixel may differ from the local fusion's


def load_pairs(task: str, size: int) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The vendored pairs of ``task``, resized to ``size`` x ``size`` (OpenCV frames)."""
    pairs = []
    for a in sorted((PAIRS / task / "a").glob("*.png")):
        frames = [cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in (a, PAIRS / task / "b" / a.name)]
        pairs.append(tuple(cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in frames))
    return pairs  # type: ignore[return-value]


def percentile(values: List[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def batch_counts(client: TritonClient) -> Dict[int, int]:
    """UNet executions by batch size (images per call) since the server started."""
    stats = client.get_json(f"/v2/models/{UNET}/stats")["model_stats"][0]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}


def run_level(url: str, clients: int, requests: int, pairs: List[Tuple[np.ndarray, np.ndarray]],
              expected: List[np.ndarray], task: str, time_limit: float) -> Dict[str, Any]:
    """``clients`` threads, each with its own connection, sending ``requests`` pairs in turn."""
    latencies: List[float] = []
    wrong: List[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + time_limit

    def client_loop(index: int) -> None:
        with TritonClient(url) as client:
            for k in range(requests):
                if time.monotonic() > deadline:
                    return
                which = (index + k) % len(pairs)
                start = time.perf_counter()
                try:
                    fused = client.fuse(*pairs[which], task)
                    ok = fused.shape == expected[which].shape and \
                        int(np.abs(fused.astype(np.int16) - expected[which]).max()) <= TOLERANCE
                    problem = "" if ok else f"client {index} pair {which}: differs from local"
                except Exception as exc:  # reported in the table, the load goes on
                    problem = f"client {index} pair {which}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if problem:
                        wrong.append(problem)

    with TritonClient(url) as probe:
        before = batch_counts(probe)
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
        after = batch_counts(probe)
    calls = {size: count - before.get(size, 0) for size, count in after.items() if count > before.get(size, 0)}
    return {"clients": clients, "pairs": len(latencies), "wall": wall, "latencies": latencies, "wrong": wrong,
            "calls": calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,4,16", help="numbers of concurrent clients (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=3, help="pairs each client sends (default 3)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds a level may send (default 300)")
    parser.add_argument("--size", type=int, default=256, help="side of the square pairs (default 256)")
    parser.add_argument("--task", default="ivf")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the task's)")
    parser.add_argument("--max-batch", type=int, default=8, help="the UNet's dynamic batch limit (default 8)")
    parser.add_argument("--fuse-instances", type=int, help="fuse model instances (default: the most clients)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    settings = resolve(args.task, steps=args.steps)
    pairs = load_pairs(args.task, args.size)

    with Fuser(args.task, settings=settings) as fuser:  # the local baseline, one process, one pair at a time
        fuser(*pairs[0])  # warm-up
        start = time.perf_counter()
        expected, local_times = [], []
        for pair in pairs:
            begin = time.perf_counter()
            expected.append(fuser(*pair))
            local_times.append(time.perf_counter() - begin)
        local_wall = time.perf_counter() - start

    python = serving_python()
    with tempfile.TemporaryDirectory(prefix="dig2dig-serve-load-") as scratch:
        repo = write_repository(Path(scratch) / "repo", settings={"steps": args.steps}, max_batch=args.max_batch,
                                fuse_instances=args.fuse_instances or max(levels)).path
        http, grpc, metrics = free_ports(3)
        with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics, python=python,
                          log=Path(scratch) / "server.log") as server:
            warm = run_level(server.http_url, args.fuse_instances or max(levels), 1, pairs, expected, args.task,
                             args.time_limit)  # every fuse instance makes its Fuser
            results = [run_level(server.http_url, c, args.requests, pairs, expected, args.task, args.time_limit)
                       for c in levels]

    print(f"machine: {machine_line()}")
    print(f"prior: {bundled_prior()}; {args.task}, {settings.describe()}; {args.size}x{args.size} pairs "
          f"({len(pairs)} distinct); UNet max batch {args.max_batch}, 1 instance; "
          f"{args.fuse_instances or max(levels)} fuse instances; warm-up {warm['pairs']} pairs, "
          f"{len(warm['wrong'])} wrong")
    print()
    print("| clients | pairs | pairs/s | p50 s | p90 s | UNet calls | images | images/call | calls by batch size "
          "| replies equal to local |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| local, 1 process | {len(pairs)} | {len(pairs) / local_wall:.2f} | {percentile(local_times, 50):.2f} | "
          f"{percentile(local_times, 90):.2f} | | | | | |")
    for r in results:
        calls = sum(r["calls"].values())
        images = sum(size * count for size, count in r["calls"].items())
        sizes = ", ".join(f"{size}: {count}" for size, count in sorted(r["calls"].items()))
        print(f"| {r['clients']} | {r['pairs']} | {r['pairs'] / r['wall']:.2f} | "
              f"{percentile(r['latencies'], 50):.2f} | {percentile(r['latencies'], 90):.2f} | {calls} | {images} | "
              f"{images / max(calls, 1):.2f} | {sizes} | {r['pairs'] - len(r['wrong'])}/{r['pairs']} |")
    for r in results:
        for problem in r["wrong"][:5]:
            print(f"{r['clients']} clients: {problem}")


if __name__ == "__main__":
    main()
