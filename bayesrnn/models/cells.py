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
    recurrent = _recurrent_product(w_hh)
    if mode == "gru":
        x_proj = _project(x, w_ih, b_ih)
        return _gru_loop(
            x_proj, h, recurrent, b_hh, valid, hidden_mask, zoneout_h, stochastic, steps
        )
    bias = None if b_ih is None else b_ih + b_hh
    x_proj = _project(x, w_ih, bias)
    outputs = []
    for t in range(steps):
        h_in = h if hidden_mask is None else h * hidden_mask
        gates = recurrent(h_in, x_proj[t])
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
    """Input projection of all steps at once; a 3-D ``weight`` (S, G, F) holds S weight draws
    and then the batch holds S groups of sequences, draw-major."""
    steps, batch, features = x.shape
    if weight.dim() == 3:
        draws = weight.shape[0]
        grouped = x.reshape(steps, draws, batch // draws, features)
        out = torch.einsum("tsbf,sgf->tsbg", grouped, weight)
        if bias is not None:
            out = out + bias.unsqueeze(1)
        return out.reshape(steps, batch, -1)
    flat = x.reshape(steps * batch, features)
    out = torch.addmm(bias, flat, weight.t()) if bias is not None else flat @ weight.t()
    return out.reshape(steps, batch, -1)


def _recurrent_product(w_hh: Tensor):
    """``(h, add) ↦ add + h W_hhᵀ``: one addmm, or one baddbmm over S weight draws."""
    if w_hh.dim() == 2:
        w_t = w_hh.t()
        return lambda h, add: torch.addmm(add, h, w_t)
    w_t = w_hh.transpose(1, 2)
    draws = w_hh.shape[0]

    def product(h: Tensor, add: Tensor) -> Tensor:
        batch = h.shape[0]
        grouped = h.reshape(draws, batch // draws, -1)
        add = add.reshape(draws, batch // draws, -1) if add.dim() == 2 else add
        return torch.baddbmm(add, grouped, w_t).reshape(batch, -1)

    return product


def _gru_loop(x_proj, h, recurrent, b_hh, valid, hidden_mask, zoneout_h, stochastic, steps):
    outputs = []
    for t in range(steps):
        h_in = h if hidden_mask is None else h * hidden_mask
        h_proj = recurrent(h_in, _bias_rows(b_hh, h_in))
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


def _bias_rows(bias: Tensor | None, h: Tensor) -> Tensor:
    """The recurrent bias as an addend for ``h``'s rows (S draws of (G,) become (S, 1, G))."""
    if bias is None:
        return h.new_zeros(())
    return bias.unsqueeze(1) if bias.dim() == 2 else bias
