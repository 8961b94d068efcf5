"""Is the gap between 2 processes and 1 rounding or estimator? Windows in float32 and float64.

Trains the default run's model and guide (``bayesrnn run``'s configuration, embedded corpus)
for the first ``--windows`` windows with 1 process and with 2 gloo processes, once in float32
and once in float64, and prints the relative difference of each window's training NLL between
the process counts. Rounding drift shrinks by ~1e-9 in float64 (its unit roundoff against
float32's); a difference of estimator (other weights, masks or gradients) would not.

    python benchmarks/distributed_float64.py [--windows 40]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SHOWN = (1, 2, 3, 5, 10, 20, 30, 40, 60, 80, 100)


def _train(windows: int, dtype: str) -> list[float]:
    import dataclasses

    from bayesrnn.app.config import RunConfig
    from bayesrnn.app.setup import quiet_log, setup
    from bayesrnn.inference import TBPTTTrainer

    torch.set_default_dtype(getattr(torch, dtype))
    config = RunConfig()
    s = setup(config, quiet_log)
    trainer_config = dataclasses.replace(config.trainer, max_windows=windows, progress=False)
    trainer = TBPTTTrainer(s.model, s.guide, s.corpus.train, None, trainer_config)
    return trainer.fit().nll


def _worker(rank: int, port: int, windows: int, dtype: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        nll = _train(windows, dtype)
        if rank == 0:
            Path(out).write_text(json.dumps(nll))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="float64-"))
    shown = [w for w in SHOWN if w <= args.windows]
    print("relative |ΔNLL| of training window w, 2 processes against 1")
    print("| dtype | " + " | ".join(f"w={w}" for w in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for dtype in ("float32", "float64"):
        one = _train(args.windows, dtype)
        out = folder / f"{dtype}.json"
        mp.spawn(_worker, args=(_free_port(), args.windows, dtype, str(out)), nprocs=2)
        two = json.loads(out.read_text())
        cells = [abs(two[w - 1] - one[w - 1]) / abs(one[w - 1]) for w in shown]
        print(f"| {dtype} | " + " | ".join(f"{c:.1e}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
