"""Bayesian LSTM, GRU and tanh-RNN layers with the ``torch.nn.LSTM/GRU/RNN`` call conventions.

Every weight and bias is a Pyro sample site named exactly like torch's parameter
(``weight_ih_l0``, ``bias_hh_l1``, …). Each forward call reads each site once, before any time
step, so one draw of the weights serves every step. When that draw (and any mask) is shared by
the whole minibatch the layer runs PyTorch's fused RNN kernel; per-sequence hidden masks and
zoneout run the lean loop of :mod:`bayesrnn.models.cells`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from bayesrnn.models.bayesian import PriorSpec, bayesianize
from bayesrnn.models.cells import run_layer
from bayesrnn.models.draws import combine, count, flatten, leading
from bayesrnn.models.priors import GaussianPrior
from bayesrnn.models.regularisers import (
    Regularisers,
    drop_connect,
    locked_mask,
    masks_active,
    naive_dropout,
)
from bayesrnn.models.rnn_options import check_torch_options
from bayesrnn.models.validation import check_finite, check_lengths, check_positive_int

GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1}
_FUSED = {"lstm": torch._VF.lstm, "gru": torch._VF.gru, "rnn_tanh": torch._VF.rnn_tanh}

State = Tensor | tuple[Tensor, Tensor]


class BayesianRNNBase(PyroModule):
    """Stacked unidirectional RNN whose weights are Pyro sample sites.

    ``prior=None`` keeps the weights as ordinary parameters (a plain RNN, for baselines run by the
    same code). ``deterministic`` names sites to keep as point estimates. ``regularisers`` takes a
    :class:`Regularisers` or a ``{name: rate}`` map. torch's ``dropout``, ``bidirectional`` and
    ``proj_size`` are accepted at their defaults only (anything else is a ValueError naming the
    argument); ``device`` and ``dtype`` place the weights as torch's do.
    """

    mode = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        prior: PriorSpec | None = GaussianPrior(1.0),
        deterministic: Iterable[str] = (),
        regularisers: Regularisers | Mapping[str, float] | None = None,
    ) -> None:
        check_torch_options(
            type(self).__name__,
            {"dropout": dropout, "bidirectional": bidirectional, "proj_size": proj_size},
        )
        super().__init__()
        self.input_size = check_positive_int("input_size", input_size)
        self.hidden_size = check_positive_int("hidden_size", hidden_size)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.regularisers = regularisers
        self.mc_dropout = False
        gates = GATES[self.mode] * hidden_size
        self._site_names: list[list[str]] = []
        for layer in range(num_layers):
            inputs = input_size if layer == 0 else hidden_size
            shapes = {
                f"weight_ih_l{layer}": (gates, inputs),
                f"weight_hh_l{layer}": (gates, hidden_size),
            }
            if bias:
                shapes |= {f"bias_ih_l{layer}": (gates,), f"bias_hh_l{layer}": (gates,)}
            bound = 1.0 / math.sqrt(hidden_size)  # torch.nn.RNNBase's default initialisation
            for name, shape in shapes.items():
                value = torch.empty(shape, device=device, dtype=dtype).uniform_(-bound, bound)
                setattr(self, name, nn.Parameter(value))
            self._site_names.append(list(shapes))
        if prior is not None:
            bayesianize(self, prior, deterministic)

    @property
    def regularisers(self) -> Regularisers:
        return self._regularisers

    @regularisers.setter
    def regularisers(self, value: Regularisers | Mapping[str, float] | None) -> None:
        regs = value if isinstance(value, Regularisers) else Regularisers.from_mapping(value)
        if regs.zoneout_c > 0 and self.mode != "lstm":
            raise ValueError("zoneout_c applies to the LSTM cell state; use zoneout_h for GRU/RNN")
        self.__dict__["_regularisers"] = regs

    # ----------------------------------------------------------------------------------------
    def layer_weights(self) -> list[tuple[Tensor, ...]]:
        """Read every weight site once: one draw for the whole call."""
        return [tuple(getattr(self, name) for name in names) for names in self._site_names]

    def draw_masks(self, batch: int, like: Tensor) -> dict[str, Tensor]:
        """Locked masks for one call: ``input_l{k}``, ``hidden_l{k}``, ``output``.

        Shapes (B, F) with scope ``"sequence"`` or (1, F) with ``"batch"``; each is shared by all
        time steps. Empty when the layer is in evaluation mode (and not under MC dropout).
        """
        regs = self.regularisers
        if not masks_active(self):
            return {}
        masks: dict[str, Tensor] = {}
        for layer in range(self.num_layers):
            features = self.input_size if layer == 0 else self.hidden_size
            if regs.locked_input > 0:
                masks[f"input_l{layer}"] = locked_mask(
                    batch, features, regs.locked_input, regs.mask_scope, like
                )
            if regs.locked_hidden > 0:
                masks[f"hidden_l{layer}"] = locked_mask(
                    batch, self.hidden_size, regs.locked_hidden, regs.mask_scope, like
                )
        if regs.locked_output > 0:
            masks["output"] = locked_mask(
                batch, self.hidden_size, regs.locked_output, regs.mask_scope, like
            )
        return masks

    def forward(
        self,
        input: Tensor | PackedSequence,
        state: State | None = None,
        lengths: Tensor | None = None,
        *,
        masks: Mapping[str, Tensor] | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        """Run the stack; returns ``(output, state)`` with ``state`` ready for the next call.

        Weight sites holding N draws (leading dims, as Pyro's vectorised ``Predictive`` and
        particles give them) run as one batch of N·B sequences: ``input`` may carry the draw
        dims in front, ``output`` has them in front, and ``state`` is (layers, N·B, hidden),
        draw-major.

        ``lengths`` (B,) gives variable lengths for a padded input (alternative to a
        ``PackedSequence``); outputs past a sequence's end are zero and its final state is the
        state at its last real step. ``masks`` overrides the locked masks (see :meth:`draw_masks`).
        """
        packed = isinstance(input, PackedSequence)
        weights = self.layer_weights()
        if packed:
            if lengths is not None:
                raise ValueError("lengths must be None when input is a PackedSequence")
            x, lengths = pad_packed_sequence(input, batch_first=False)
            self._check_features(x)
            draws = self._draws(weights, x)
            if draws:
                raise ValueError("a PackedSequence takes one weight draw; pad the input instead")
            weights = self._merge_draws(x, weights, draws)[1]
        else:
            x = self._check_input(input)
            if self.batch_first:
                x = x.transpose(-3, -2)
            draws = self._draws(weights, x)
            x, weights = self._merge_draws(x, weights, draws)
            if lengths is not None:
                lengths = check_lengths(lengths, x.shape[1] // max(count(draws), 1), x.shape[0])
                lengths = lengths.repeat(count(draws)) if draws else lengths
        steps, batch, _ = x.shape
        h0, c0 = self._initial_state(state, batch, x)
        regs = self.regularisers
        active = masks_active(self)
        masks = dict(self.draw_masks(batch, x) if masks is None else masks)
        looped = (
            regs.zoneout_c > 0
            or regs.zoneout_h > 0
            or any(k.startswith("hidden") and v.shape[0] > 1 for k, v in masks.items())
            or weights[0][0].dim() == 3  # N weight draws at once: the batch is N groups
        )
        valid = None
        if lengths is not None and looped:
            valid = (torch.arange(steps).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)
            valid = valid.to(x.device)
        h_out, c_out = [], []
        layer_input = x
        for layer in range(self.num_layers):
            layer_input = self._input_dropout(layer_input, masks.get(f"input_l{layer}"), active)
            w = list(weights[layer])
            if active and regs.weight_drop > 0:
                w[1] = drop_connect(w[1], regs.weight_drop)
            hidden_mask = masks.get(f"hidden_l{layer}")
            c_layer = None if c0 is None else c0[layer]
            if looped:
                layer_input, h_l, c_l = run_layer(
                    self.mode,
                    layer_input,
                    h0[layer],
                    c_layer,
                    tuple(w),
                    valid,
                    hidden_mask,
                    regs.zoneout_c,
                    regs.zoneout_h,
                    active,
                )
            else:
                if hidden_mask is not None:  # one mask for the batch: fold into W_hh's columns
                    w[1] = w[1] * hidden_mask
                layer_input, h_l, c_l = self._fused_layer(
                    layer_input, h0[layer], c_layer, w, lengths
                )
            h_out.append(h_l)
            c_out.append(c_l)
        output = self._output_dropout(layer_input, masks.get("output"), active)
        h_n = torch.stack(h_out)
        new_state: State = (h_n, torch.stack(c_out)) if self.mode == "lstm" else h_n
        if packed:
            return pack_padded_sequence(output, lengths, enforce_sorted=False), new_state
        if draws:  # (T, N·B, H), draw-major → (*draws, T, B, H)
            output = output.reshape(steps, count(draws), -1, output.shape[-1]).transpose(0, 1)
            output = output.reshape(*draws, *output.shape[1:])
        if self.batch_first:
            output = output.transpose(-3, -2)
        return output, new_state

    @staticmethod
    def _draws(weights: list[tuple[Tensor, ...]], x: Tensor) -> torch.Size:
        """The draw dims of this call: the weights' leading dims and the input's beyond 3."""
        pairs = [(w, 2 if i < 2 else 1) for layer in weights for i, w in enumerate(layer)]
        return combine(x.shape[:-3], *(leading(w, e) for w, e in pairs))

    @staticmethod
    def _merge_draws(x: Tensor, weights: list[tuple[Tensor, ...]], draws: torch.Size):
        """N draws run as one batch of N·B sequences, draw-major, with (N, …) weights."""
        flat = [
            tuple(flatten(w, 2 if i < 2 else 1, draws) for i, w in enumerate(layer))
            for layer in weights
        ]
        if not draws:
            return x.reshape(x.shape[-3:]), flat
        x = flatten(x, 3, draws)  # (N, T, B, F)
        n, steps, batch, features = x.shape
        return x.transpose(0, 1).reshape(steps, n * batch, features), flat

    # ----------------------------------------------------------------------------------------
    def _fused_layer(self, x, h, c, weights, lengths):
        fused = _FUSED[self.mode]
        hx = (h.unsqueeze(0), c.unsqueeze(0)) if self.mode == "lstm" else h.unsqueeze(0)
        if lengths is None:
            result = fused(x, hx, weights, self.bias, 1, 0.0, False, False, False)
            return result[0], result[1][0], (result[2][0] if self.mode == "lstm" else None)
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        order, unorder = packed.sorted_indices, packed.unsorted_indices
        if self.mode == "lstm":
            hx = (hx[0].index_select(1, order), hx[1].index_select(1, order))
        else:
            hx = hx.index_select(1, order)
        result = fused(
            packed.data, packed.batch_sizes, hx, weights, self.bias, 1, 0.0, False, False
        )
        out_packed = PackedSequence(result[0], packed.batch_sizes, order, unorder)
        out, _ = pad_packed_sequence(out_packed, batch_first=False, total_length=x.shape[0])
        h_n = result[1][0].index_select(0, unorder)
        c_n = result[2][0].index_select(0, unorder) if self.mode == "lstm" else None
        return out, h_n, c_n

    def _input_dropout(self, x: Tensor, mask: Tensor | None, active: bool) -> Tensor:
        if mask is not None:
            x = x * mask
        if active:
            x = naive_dropout(x, self.regularisers.naive_dropout)
        return x

    def _output_dropout(self, x: Tensor, mask: Tensor | None, active: bool) -> Tensor:
        return self._input_dropout(x, mask, active)

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise ValueError(f"input must be a Tensor or PackedSequence, got {type(x).__name__}")
        if x.dim() < 3:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise ValueError(
                f"input must be 3-D {layout} (draw dims may lead), got shape {tuple(x.shape)}"
            )
        self._check_features(x)
        return x

    def _check_features(self, x: Tensor) -> None:
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"input has {x.shape[-1]} features, but the layer's input_size is {self.input_size}"
            )
        check_finite("input", x)

    def _initial_state(self, state: State | None, batch: int, x: Tensor):
        shape = (self.num_layers, batch, self.hidden_size)
        if state is None:
            zeros = x.new_zeros(shape)
            return zeros, (x.new_zeros(shape) if self.mode == "lstm" else None)
        if self.mode == "lstm":
            if not (isinstance(state, tuple | list) and len(state) == 2):
                raise ValueError("state of an LSTM must be a tuple (h, c)")
            h, c = state
            for name, t in (("state h", h), ("state c", c)):
                self._check_state_tensor(name, t, shape)
            return h, c
        if isinstance(state, tuple | list):
            raise ValueError(f"state of a {self.mode.upper()} must be a single tensor h")
        self._check_state_tensor("state", state, shape)
        return state, None

    @staticmethod
    def _check_state_tensor(name: str, t: Tensor, shape: tuple[int, ...]) -> None:
        if not isinstance(t, Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must have shape {shape} (layers, batch, hidden), got {got}")
        check_finite(name, t)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
            f"bias={self.bias}, batch_first={self.batch_first}"
        )


class BayesianLSTM(BayesianRNNBase):
    """Bayesian counterpart of ``torch.nn.LSTM``; the state is ``(h, c)``."""

    mode = "lstm"


class BayesianGRU(BayesianRNNBase):
    """Bayesian counterpart of ``torch.nn.GRU``."""

    mode = "gru"


class BayesianRNN(BayesianRNNBase):
    """Bayesian counterpart of ``torch.nn.RNN`` with tanh nonlinearity (``"relu"`` is refused).

    ``nonlinearity`` may come fourth, as in torch's legacy positional form; the remaining
    arguments are then those of :class:`BayesianRNNBase`.
    """

    mode = "rnn_tanh"

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if len(args) > 3 and isinstance(args[3], str):  # torch: (in, hidden, layers, nonlinearity)
            nonlinearity, args = args[3], args[:3] + args[4:]
        check_torch_options(type(self).__name__, {"nonlinearity": nonlinearity})
        super().__init__(*args, **kwargs)
