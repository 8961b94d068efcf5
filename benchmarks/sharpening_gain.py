"""How much can posterior sharpening gain per window? Measured at a trained run's posterior.

For consecutive training windows of a run (hidden state carried), draws φ ~ q(φ), takes
g = ∇_φ of the window's summed NLL, and for step sizes η = κ·σ0² evaluates the sharpened
window objective NLL(φ − ηg) + ‖ηg‖²/(2σ0²) against NLL(φ). To first order the gain is
κ(1 − κ/2)·σ0²‖g‖², largest at κ = 1 (the guide's initial η): σ0²‖g‖²/2 nats per window.
Prints, per κ, the mean change of the window objective (nats per token; negative = sharpening
helps), the first-order prediction, and ‖ηg‖/‖σ‖.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sharpening_gain.py --run DIR``
where DIR is a language-model run directory (mean-field or sharpened guide).
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

from bayesrnn.app.pipeline import load_run_for
from bayesrnn.data.streams import batchify
from bayesrnn.inference.guides.sharpened import window_nll_gradient
from bayesrnn.inference.prediction.predictive import _run, _target_log_probs, sample_weights
from bayesrnn.inference.runtime.tbptt import Window, window_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run directory")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--sigma0", type=float, default=0.02)
    parser.add_argument("--multipliers", type=float, nargs="+", default=[1, 10, 100, 1000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    s, _, history = load_run_for(args.run)
    model, guide = s.model, s.guide
    guide.eval()  # a plain q(φ) draw, no sharpening inside the guide
    cfg = s.config.trainer
    data = batchify(s.corpus.train, cfg.batch_size)
    sigma_norm = math.sqrt(sum(float(v.square().sum()) for v in _scales(guide).values()))
    s0 = args.sigma0
    rows = {k: [] for k in args.multipliers}
    grad_norms, state = [], None
    for w in range(args.windows):
        inputs, targets = window_batch(data, Window(w * cfg.bptt, cfg.bptt))
        phi = sample_weights(guide, inputs, targets, state=None)
        nll_phi, g = window_nll_gradient(model, phi, inputs, targets, state=state)
        g_square = sum(float(v.square().sum()) for v in g.values())
        grad_norms.append(math.sqrt(g_square))
        for k in args.multipliers:
            eta = k * s0**2
            theta = {site: phi[site] - eta * g[site] for site in phi}
            with torch.no_grad():  # the NLL alone: no backward pass at θ
                logits, _ = _run(model, theta, inputs, state)
                nll_theta = -float(_target_log_probs(logits, targets).sum())
            kl = eta**2 * g_square / (2 * s0**2)
            rows[k].append(
                {
                    "change": (nll_theta + kl - nll_phi) / targets.numel(),
                    "first_order": -k * (1 - k / 2) * s0**2 * g_square / targets.numel(),
                    "ratio": eta * math.sqrt(g_square) / sigma_norm,
                    "nll_gain": (nll_phi - nll_theta) / targets.numel(),
                }
            )
        with torch.no_grad():  # carry the state as training does, with φ's network
            _, state = _run(model, phi, inputs, state)
    epochs = len(history.get("valid_perplexity", []))
    print(
        f"run {args.run} after {epochs} epoch(s); {args.windows} windows of "
        f"{cfg.batch_size}x{cfg.bptt} tokens; sigma0 {s0}; mean ||g|| (window NLL sum) "
        f"{statistics.mean(grad_norms):.1f}; ||sigma|| {sigma_norm:.1f}"
    )
    print("| η / σ0² | Δ objective (nats/token) | first-order prediction | NLL gain | ‖ηg‖/‖σ‖ |")
    print("|---:|---:|---:|---:|---:|")
    for k, values in rows.items():
        mean = {key: statistics.mean(v[key] for v in values) for key in values[0]}
        print(
            f"| {k:g} | {mean['change']:+.2e} | {mean['first_order']:+.2e} | "
            f"{mean['nll_gain']:+.2e} | {mean['ratio']:.2e} |"
        )


def _scales(guide) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {site: guide.scale(site) for site in guide.site_names}


if __name__ == "__main__":
    main()
