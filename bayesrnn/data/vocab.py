"""Token <-> id mapping shared by every corpus, saved inside checkpoints as plain JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["EOS", "PAD", "UNK", "Vocabulary"]

UNK = "<unk>"
EOS = "<eos>"
PAD = "<pad>"

_FORMAT = 1


class Vocabulary:
    """An immutable token list with special tokens at fixed ids.

    Reserved tokens come first, in the order ``pad``, ``unk``, ``eos`` (each only if enabled), then
    the remaining tokens by frequency (descending) and then by token string, so two builds from the
    same text always give the same ids. Any reserved token may be ``None`` (absent): PTB character
    level has no ``<unk>``, classification has no ``<eos>``. Without an ``<unk>``, encoding an
    unknown token raises instead of silently mapping it.
    """

    def __init__(
        self,
        itos: Sequence[str],
        *,
        unk_token: str | None = UNK,
        eos_token: str | None = EOS,
        pad_token: str | None = None,
    ) -> None:
        itos = list(itos)
        if not all(isinstance(token, str) for token in itos):
            raise ValueError("Vocabulary tokens must all be str")
        stoi = {token: index for index, token in enumerate(itos)}
        if len(stoi) != len(itos):
            dupes = sorted(token for token, n in Counter(itos).items() if n > 1)
            raise ValueError(f"Vocabulary has duplicate tokens: {dupes[:10]}")
        for role, token in (("unk", unk_token), ("eos", eos_token), ("pad", pad_token)):
            if token is not None and token not in stoi:
                raise ValueError(f"{role}_token {token!r} is not in the vocabulary")
        self._itos = itos
        self._stoi = stoi
        self.unk_token = unk_token
        self.eos_token = eos_token
        self.pad_token = pad_token

    @classmethod
    def build(
        cls,
        tokens: Iterable[str] | Mapping[str, int],
        *,
        max_size: int | None = None,
        min_count: int = 1,
        unk_token: str | None = UNK,
        eos_token: str | None = EOS,
        pad_token: str | None = None,
    ) -> Vocabulary:
        """Build from training tokens (or a token -> count mapping).

        ``max_size`` counts the reserved tokens too, so ``max_size=10_000`` gives at most 10,000
        ids. Tokens cut by ``max_size`` or ``min_count`` map to ``<unk>``; cutting any token
        without an ``<unk>`` is a ``ValueError``.
        """
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be a positive int or None, got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = Counter(tokens) if not isinstance(tokens, Mapping) else Counter(dict(tokens))
        reserved = [t for t in (pad_token, unk_token, eos_token) if t is not None]
        if len(set(reserved)) != len(reserved):
            raise ValueError(f"reserved tokens must differ, got {reserved}")
        if max_size is not None and max_size < len(reserved):
            raise ValueError(f"max_size={max_size} leaves no room for reserved tokens {reserved}")
        candidates = [(t, n) for t, n in counts.items() if t not in reserved]
        candidates.sort(key=lambda item: (-item[1], item[0]))
        kept = [t for t, n in candidates if n >= min_count]
        if max_size is not None:
            kept = kept[: max_size - len(reserved)]
        if unk_token is None and len(kept) < len(candidates):
            raise ValueError(
                f"{len(candidates) - len(kept)} token types were cut by max_size/min_count, "
                "but the vocabulary has no unk_token to map them to"
            )
        return cls(reserved + kept, unk_token=unk_token, eos_token=eos_token, pad_token=pad_token)

    # --- lookups -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, token: object) -> bool:
        return token in self._stoi

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self._itos[:5])
        return f"Vocabulary(size={len(self)}, tokens=[{head}{', ...' if len(self) > 5 else ''}])"

    @property
    def itos(self) -> list[str]:
        """Tokens in id order (a copy)."""
        return list(self._itos)

    @property
    def unk_id(self) -> int | None:
        """Id of ``<unk>``, or ``None`` when unknown tokens are an error."""
        return None if self.unk_token is None else self._stoi[self.unk_token]

    @property
    def eos_id(self) -> int | None:
        """Id of the end-of-sentence token, or ``None`` when the vocabulary has none."""
        return None if self.eos_token is None else self._stoi[self.eos_token]

    @property
    def pad_id(self) -> int | None:
        """Id of the padding token, or ``None`` when the vocabulary has none."""
        return None if self.pad_token is None else self._stoi[self.pad_token]

    def token_to_id(self, token: str) -> int:
        """Id of one token (``<unk>`` for unknown ones, ``KeyError`` when there is no ``<unk>``)."""
        index = self._stoi.get(token)
        if index is not None:
            return index
        if self.unk_token is None:
            raise KeyError(f"token {token!r} is not in the vocabulary, which has no unk_token")
        return self._stoi[self.unk_token]

    def id_to_token(self, index: int) -> str:
        """Token of one id; out of range is a ``ValueError``."""
        if not 0 <= index < len(self._itos):
            raise ValueError(f"id {index} is outside the vocabulary [0, {len(self._itos)})")
        return self._itos[index]

    def encode(self, tokens: Iterable[str]) -> Tensor:
        """Map tokens to a 1-D ``LongTensor`` (unknown tokens -> ``<unk>``)."""
        if isinstance(tokens, str):
            raise ValueError("encode expects a sequence of tokens, not one str (split it first)")
        stoi = self._stoi
        if self.unk_token is not None:
            unk = stoi[self.unk_token]
            ids = [stoi.get(token, unk) for token in tokens]
        else:
            tokens = list(tokens)
            try:
                ids = [stoi[token] for token in tokens]
            except KeyError as err:
                raise ValueError(
                    f"token {err.args[0]!r} is not in the vocabulary, which has no unk_token"
                ) from None
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: Tensor | Iterable[int]) -> list[str]:
        """Map ids (a 1-D tensor or ints) back to tokens."""
        if isinstance(ids, Tensor):
            if ids.dim() > 1:
                raise ValueError(f"decode expects a 1-D tensor, got shape {tuple(ids.shape)}")
            if ids.is_floating_point() or ids.is_complex():
                raise ValueError(f"decode expects integer ids, got dtype {ids.dtype}")
            ids = ids.reshape(-1).tolist()
        itos = self._itos
        out = []
        for index in ids:
            index = int(index)
            if not 0 <= index < len(itos):
                raise ValueError(f"id {index} is outside the vocabulary [0, {len(itos)})")
            out.append(itos[index])
        return out

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (only str, int, list and None) for checkpoints."""
        return {
            "format": _FORMAT,
            "itos": list(self._itos),
            "unk_token": self.unk_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Vocabulary:
        """Inverse of :meth:`to_dict`; a malformed state is a ``ValueError``."""
        if not isinstance(state, Mapping) or "itos" not in state:
            raise ValueError("vocabulary state must be a mapping with an 'itos' list")
        if state.get("format", _FORMAT) != _FORMAT:
            raise ValueError(f"unsupported vocabulary format {state.get('format')!r}")
        return cls(
            state["itos"],
            unk_token=state.get("unk_token"),
            eos_token=state.get("eos_token"),
            pad_token=state.get("pad_token"),
        )
