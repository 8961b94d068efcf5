"""The resumable state of a :class:`bayesrnn.inference.SVITrainer`: what a checkpoint holds,
when it is written, and how a resume restores it."""

from __future__ import annotations

from dataclasses import asdict, fields

import torch

from bayesrnn.inference.runtime.distributed import gather_columns
from bayesrnn.inference.training.checkpoint import cpu_copy, load_checkpoint, save_checkpoint
from bayesrnn.inference.training.early_stopping import best_checkpoint_path
from bayesrnn.inference.training.trainer_config import History

__all__ = ["TrainerCheckpoints"]


class TrainerCheckpoints:
    """Checkpoint writing and restoring, mixed into the trainer (it reads the trainer's model,
    guide, optimiser, scheduler, early stopping, generator, position, state, plan and
    history)."""

    def save_checkpoint(self) -> None:
        """Write the resumable state now.

        ``fit`` also checkpoints every N steps and at each epoch's end, but writes such a
        checkpoint only after the next step has scored its weights within the divergence
        ceiling (or when ``fit`` returns), so a diverging run never overwrites a good one.
        """
        if self.checkpoint_path is None:
            return
        payload = self._payload()  # a collective under torch.distributed: every rank calls it
        if self.ranks.is_main:
            save_checkpoint(self.checkpoint_path, payload)

    def _checkpoint_due(self) -> None:
        """Keep a copy of the state now, to be written once the next step vouches for it."""
        if self.checkpoint_path is None:
            return
        # Weights stepped from ones that scored above the ceiling are suspect: no copy of them.
        self._pending = None if self.guard.suspect else cpu_copy(self._payload())

    def _write_pending(self) -> None:
        if self._pending is not None and self.checkpoint_path is not None and self.ranks.is_main:
            save_checkpoint(self.checkpoint_path, self._pending)
        self._pending = None

    def _payload(self) -> dict:
        return {
            **self.checkpoint_tags,
            **self._parameters(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "early_stopping": self.early.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "window_rng": self.generator.get_state(),
            "position": list(self._position),
            "state": gather_columns(self._state, self.ranks),  # all B sequences' state
            "plan": self.batching.encode(self._plan or []),
            "history": self.history.to_dict(),
            "config": asdict(self.config),
            "divergence_streak": self.guard.streak,
        }

    def _restore(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        if isinstance(self.guide, torch.nn.Module):
            self.guide.load_state_dict(payload["guide"])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scheduler is not None and payload.get("scheduler") is not None:
            self.scheduler.load_state_dict(payload["scheduler"])
        self.early.load_state_dict(payload.get("early_stopping", {}))
        best = best_checkpoint_path(self.checkpoint_path) if self.checkpoint_path else None
        if self.early.patience is not None and best is not None and best.is_file():
            self._best = {k: v for k, v in load_checkpoint(best).items() if k in ("model", "guide")}
        torch.set_rng_state(payload["torch_rng"].cpu())
        if payload["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in payload["cuda_rng"]])
        self.generator.set_state(payload["window_rng"])
        self._position = tuple(payload["position"])
        self._state = self.batching.local_state(payload["state"])
        stored = payload["plan"] if "plan" in payload else payload["windows"]  # before 0.1.1
        self._plan = self.batching.decode(stored)
        known = {f.name for f in fields(History)}
        self.history = History(**{k: v for k, v in payload["history"].items() if k in known})
        self.guard.streak = int(payload.get("divergence_streak", 0))
