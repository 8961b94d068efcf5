"""How closely `bayesrnn run` under torchrun with 2 processes follows one process, window by window.

Runs the same job as one process (1 thread) and under `torchrun --nproc-per-node 2` (1 thread
each). Prints the relative difference of the per-window training NLL at a few windows, and
the final test metrics. A difference that starts at float32 rounding (~1e-7) and grows over
the windows is reduction-order drift amplified by training; an estimator difference (other
masks, other weight draws, another gradient) shows at the first steps, far above rounding.
``benchmarks/distributed_float64.py`` tells the two apart directly.

    python benchmarks/distributed_agreement.py [--out DIR] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {  # name: (processes, threads per process)
    "one": (1, 1),
    "two-processes": (2, 1),
}
WINDOWS = (1, 2, 3, 5, 10, 20, 50, 100, 150, 200)
METRICS = (
    ("valid perplexity (last epoch)", ("training", "valid_perplexity")),
    ("test perplexity (mean)", ("test", "perplexity_mean")),
    ("test perplexity (MC)", ("test", "perplexity_mc")),
    ("test ECE (mean)", ("test", "posterior_mean", "ece")),
    ("test ECE (MC)", ("test", "mc", "ece")),
)


def run(name: str, folder: Path, settings: list[str]) -> Path:
    processes, threads = RUNS[name]
    out = folder / name
    if (out / "metrics.json").is_file():  # a finished run is reused
        return out
    argv = ["-m", "bayesrnn", "run", "--quiet", "--out", str(out)]
    for setting in settings:
        argv += ["--set", setting]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone"]
        argv = [*launcher, "--nproc-per-node", str(processes), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, *argv], env=env, check=True)
    return out


def _value(metrics: dict, path: tuple[str, ...]) -> float:
    for key in path:
        metrics = metrics[key]
    return float(metrics[-1] if isinstance(metrics, list) else metrics)  # per epoch: the last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    parser.add_argument("--set", action="append", default=[], help="config override, repeatable")
    args = parser.parse_args()
    folder = args.out or Path(tempfile.mkdtemp(prefix="agreement-"))
    runs = {name: run(name, folder, args.set) for name in RUNS}
    nll = {n: json.loads((d / "history.json").read_text())["nll"] for n, d in runs.items()}
    metrics = {n: json.loads((d / "metrics.json").read_text()) for n, d in runs.items()}
    base = nll["one"]
    shown = [w for w in WINDOWS if w <= len(base)] + [len(base)]
    print("relative |ΔNLL| of training window w against one process (1 thread)")
    print("| run | " + " | ".join(f"w={w}" for w in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for name in list(RUNS)[1:]:
        cells = [abs(nll[name][w - 1] - base[w - 1]) / abs(base[w - 1]) for w in shown]
        print(f"| {name} | " + " | ".join(f"{c:.1e}" for c in cells) + " |")
    print()
    print("| metric | " + " | ".join(RUNS) + " |")
    print("|---|" + "---|" * len(RUNS))
    for label, path in METRICS:
        values = [_value(metrics[name], path) for name in RUNS]
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    print(f"\nruns kept in {folder}")


if __name__ == "__main__":
    main()
