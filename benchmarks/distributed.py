"""Tokens per second of `bayesrnn train` with 1 and 2 processes (torchrun, gloo, this CPU).

Each run trains one epoch of the embedded corpus (94,373 tokens) with the given model size and
reads the trainer's own tokens/s (all ranks' tokens over the epoch's wall time). Prints the
speed-up over the first process count. The CPUs are shared out: each process gets
cpu_count / processes threads, so the comparison is at equal hardware. Then times the one
collective a window adds: a gloo all-reduce of as many floats as the run trains (guide and
model parameters), between 2 processes, against the 1-process time per window.

    python benchmarks/distributed.py [--hidden 128] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def train(processes: int, hidden: int, folder: Path) -> dict:
    out = folder / f"p{processes}"
    argv = [
        "-m", "bayesrnn", "train", "--quiet", "--out", str(out), "--epochs", "1",
        "--set", f"model.hidden_size={hidden}", "--set", f"model.embedding_size={hidden}",
        "--set", "trainer.batch_size=20", "--set", "trainer.bptt=35",
    ]  # fmt: skip
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc-per-node", str(processes), *argv]
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    began = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - began
    history = json.loads((out / "history.json").read_text())
    return {"tokens_per_second": history["tokens_per_second"][0], "wall_s": wall}


def _allreduce_worker(rank: int, port: int, count: int, repeats: int, result) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    buffer = torch.randn(count)
    dist.all_reduce(buffer)  # warm-up
    began = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(buffer)
    if rank == 0:
        result.value = (time.perf_counter() - began) / repeats
    dist.destroy_process_group()


def allreduce_seconds(count: int, repeats: int = 30) -> float:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.get_context("spawn")
    result = context.Value("d", 0.0)
    processes = [
        context.Process(target=_allreduce_worker, args=(r, port, count, repeats, result))
        for r in range(2)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return result.value


def trained_parameters(hidden: int) -> int:
    from bayesrnn.app.config_files import resolve_config
    from bayesrnn.app.setup import quiet_log, setup

    overrides = [f"model.hidden_size={hidden}", f"model.embedding_size={hidden}"]
    s = setup(resolve_config(None, None, overrides), quiet_log)
    params = {*s.model.parameters(), *s.guide.parameters()}
    return sum(p.numel() for p in params if p.requires_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = {p: train(p, args.hidden, Path(tmp)) for p in args.processes}
    base = rows[args.processes[0]]["tokens_per_second"]
    print(f"machine: {os.cpu_count()} CPUs; model 1x{args.hidden} LSTM, Bayes by Backprop, B=20")
    print("processes  tokens/s  speed-up  wall s (with start-up)")
    for p, row in rows.items():
        speed = row["tokens_per_second"]
        print(f"{p:>9}  {speed:8.0f}  {speed / base:8.2f}  {row['wall_s']:6.1f}")
    count = trained_parameters(args.hidden)
    seconds = allreduce_seconds(count)
    window = 20 * 35 / base  # one process's seconds per window of B·T tokens
    print(
        f"all-reduce of {count:,} floats between 2 gloo processes: {seconds * 1e3:.1f} ms per "
        f"window, against {window * 1e3:.1f} ms per window of 1 process ({seconds / window:.0%})"
    )


if __name__ == "__main__":
    main()
