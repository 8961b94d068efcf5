"""What a run that diverged leaves behind, and a message that says so and what to do.

The trainer's own message already says whether a checkpoint exists. A run stopped before its
first checkpoint holds nothing of value, only the config and vocabulary this command wrote: they
are removed (with the directory, when this command made it), so the same ``--out`` takes a
corrected start; a file the command did not create is never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bayesrnn.app.run_dir import RunDir, is_scratch
from bayesrnn.inference import NonFiniteLossError
from bayesrnn.inference.training.early_stopping import best_checkpoint_path

__all__ = ["after_divergence"]

_REMEDY = "a lower trainer.lr, or with trainer.clip_norm set"


def after_divergence(
    error: NonFiniteLossError, run: RunDir, created: Sequence[Path], made_dir: bool
) -> NonFiniteLossError:
    """``error`` with what now exists and what to do; without a checkpoint, the files in
    ``created`` (those this command wrote) are removed first. ``made_dir``: this command created
    the run directory (its lock then removes it once it is empty)."""
    text = str(error)
    if run.checkpoint.is_file() or best_checkpoint_path(run.checkpoint).is_file():
        return type(error)(
            f"{text}: `bayesrnn evaluate --out {run.root}` scores it as it is, and the same "
            f"command resumes from it; to train again with {_REMEDY}, use another --out"
        )
    for path in created:
        path.unlink(missing_ok=True)
    left = sorted(p.name for p in run.root.iterdir() if not is_scratch(p))
    if not left:
        what = "was removed" if made_dir else "was emptied of the files this command wrote"
        return type(error)(
            f"{text}; {run.root} held nothing of value and {what}: run again with {_REMEDY}"
        )
    return type(error)(
        f"{text}; {run.root} holds only {', '.join(left)} from an earlier start without a "
        f"checkpoint: delete the directory, or use another --out, to run again with {_REMEDY}"
    )
