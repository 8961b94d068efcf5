"""Step-by-step recurrences for the cases the fused kernel cannot run.

Per-sequence hidden masks (Gal's method) and zoneout act inside the recurrence, so these layers
run a Python loop over time. The loop is kept lean: the input projection of every step is one
matmul before the loop, and each step does one fused ``addmm`` for the recurrent projection.
Weights are PyTorch's layout and gate order (LSTM i, f, g, o; GRU r, z, n).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bayesrnn.models.regularisers import zoneout


def run_layer(
    mode: str,
    x: Tensor,
    h: Tensor,
    c: Tensor | None,
    weights: tuple[Tensor, ...],
    valid: Tensor | None,
    hidden_mask: Tensor | None,
    zoneout_c: float,
    zoneout_h: float,
    stochastic: bool,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One layer over a padded time-major input ``x`` (T, B, F).

    ``valid`` (T, B, 1) marks real steps of variable-length sequences: past its end a sequence
    keeps its state and emits zeros, as PyTorch's packed kernels do. ``hidden_mask`` (B or 1, H)
    multiplies h_{t-1} where it enters the recurrent matmul, which equals using the per-sequence
    weights W_hh·diag(z_b) without forming them.
    """
    w_ih, w_hh = weights[0], weights[1]
    b_ih = weights[2] if len(weights) > 2 else None
    b_hh = weights[3] if len(weights) > 3 else None
    steps = x.shape[0]
    if mode == "gru":
        x_proj = _project(x, w_ih, b_ih)
        return _gru_loop(x_proj, h, w_hh, b_hh, valid, hidden_mask, zoneout_h, stochastic, steps)
    bias = None if b_ih is None else b_ih + b_hh
    x_proj = _project(x, w_ih, bias)
    w_hh_t = w_hh.t()
    outputs = []
    for t in range(steps):
        h_in = h if hidden_mask is None else h * hidden_mask
        gates = torch.addmm(x_proj[t], h_in, w_hh_t)
        if mode == "lstm":
            i, f, g, o = gates.chunk(4, dim=1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            c_new = zoneout(c, c_new, zoneout_c, stochastic)
        else:
            h_new, c_new = torch.tanh(gates), None
        h_new = zoneout(h, h_new, zoneout_h, stochastic)
        if valid is not None:
            keep = valid[t]
            h_new = torch.where(keep, h_new, h)
            if c_new is not None:
                c_new = torch.where(keep, c_new, c)
            outputs.append(h_new * keep)
        else:
            outputs.append(h_new)
        h, c = h_new, c_new
    return torch.stack(outputs), h, c


def _project(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    steps, batch, features = x.shape
    flat = x.reshape(steps * batch, features)
    out = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
    return out.reshape(steps, batch, -1)


def _gru_loop(x_proj, h, w_hh, b_hh, valid, hidden_mask, zoneout_h, stochastic, steps):
    w_hh_t = w_hh.t()
    outputs = []
    for t in range(steps):
        h_in = h if hidden_mask is None else h * hidden_mask
        h_proj = torch.addmm(b_hh, h_in, w_hh_t) if b_hh is not None else h_in @ w_hh_t
        x_r, x_z, x_n = x_proj[t].chunk(3, dim=1)
        h_r, h_z, h_n = h_proj.chunk(3, dim=1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        h_new = n + z * (h - n)
        h_new = zoneout(h, h_new, zoneout_h, stochastic)
        if valid is not None:
            keep = valid[t]
            h_new = torch.where(keep, h_new, h)
            outputs.append(h_new * keep)
        else:
            outputs.append(h_new)
        h = h_new
    return torch.stack(outputs), h, None
