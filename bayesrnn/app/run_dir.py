"""Files of one run directory: refusing a clashing one, reading its config, strict JSON."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bayesrnn.app.config import RunConfig
from bayesrnn.app.config_files import comparable, config_from_dict, load_toml, write_text_atomic
from bayesrnn.data.atomic import is_temporary

__all__ = [
    "JobError",
    "RunDir",
    "check_run_dir",
    "free_name",
    "is_scratch",
    "numbered_name",
    "read_json",
    "read_metrics",
    "read_run_config",
    "write_json",
]


class JobError(ValueError):
    """A run that cannot start: a clashing output directory, an incompatible device, ..."""


# --- the run directory --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one run."""

    root: Path

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def history(self) -> Path:
        return self.root / "history.json"

    @property
    def posterior(self) -> Path:
        return self.root / "posterior.nc"

    @property
    def vocabulary(self) -> Path:
        """The run's vocabulary, tokenizer and data fingerprint (``vocab.json``)."""
        return self.root / "vocab.json"


def free_name(path: Path) -> Path:
    """``path`` if nothing is there, else :func:`numbered_name`."""
    return path if not path.exists() else numbered_name(path)


def numbered_name(path: Path) -> Path:
    """The first free ``stem-2.suffix``, ``stem-3.suffix``, ... beside ``path``."""
    number = 2
    while (candidate := path.with_name(f"{path.stem}-{number}{path.suffix}")).exists():
        number += 1
    return candidate


LOCK_NAME = ".lock"  # see bayesrnn.app.run_lock


def is_scratch(path: Path) -> bool:
    """The lock file and killed writers' temporaries: not a run's content."""
    return path.name == LOCK_NAME or is_temporary(path)


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            out += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key} ({left!r} there, {right!r} now)")
    return out


def check_run_dir(root: Path, config: RunConfig) -> bool:
    """Refuse a directory that holds another run or other files; True if it can be resumed."""
    run = RunDir(root)
    if root.exists() and not root.is_dir():
        raise JobError(f"--out {root} exists and is not a directory")
    if run.config.is_file():
        stored = read_run_config(run)
        diff = _differences(comparable(stored), comparable(config))
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise JobError(
                f"{root} holds a run with a different config: {shown}. Use another --out, or "
                "the same options to resume it"
            )
        return True
    if root.is_dir() and any(not is_scratch(p) for p in root.iterdir()):
        raise JobError(
            f"{root} is not empty and holds no bayesrnn run (no config.toml); "
            "choose a new or empty --out"
        )
    return False


def read_run_config(run: RunDir) -> RunConfig:
    if not run.config.is_file():
        raise JobError(f"{run.root} is not a bayesrnn run directory (no config.toml)")
    return config_from_dict(load_toml(run.config), str(run.config))


def read_json(path: Path) -> Any:
    """A JSON file of a run; unreadable or malformed is a JobError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:  # the parser recurses per level: 100k nested lists end here
        raise JobError(
            f"{path} is nested too deeply to be a file this package wrote; delete it and run "
            "the command that wrote it again"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JobError(
            f"{path} is corrupt ({' '.join(str(error).split())}); delete it and run the command "
            "that wrote it again"
        ) from None


def read_metrics(path: Path) -> dict[str, Any]:
    """A run's ``metrics.json``, checked where the summary and ``load_run`` read it: a dict
    whose ``training`` and splits are dicts, each split with its ``mc`` results."""
    metrics = read_json(path)

    def damaged(what: str) -> JobError:
        return JobError(
            f"{path} is damaged: {what}; delete it and run `bayesrnn evaluate` on the run to "
            "write it again"
        )

    if not isinstance(metrics, dict):
        raise damaged(f"it holds a {type(metrics).__name__}, not the results")
    if "training" in metrics and not isinstance(metrics["training"], dict):
        raise damaged("its 'training' is not a dictionary")
    for split in ("test", "valid"):
        if split not in metrics:
            continue
        if not isinstance(metrics[split], dict):
            raise damaged(f"its {split!r} is not a dictionary")
        if not isinstance(metrics[split].get("mc"), dict):
            raise damaged(f"its {split!r} has no 'mc' results")
    return metrics


def write_json(path: Path, payload: Any) -> Path:
    """Atomic JSON write; NaN and infinities become null so the file is strict JSON."""
    return write_text_atomic(path, json.dumps(_finite(payload), indent=2, allow_nan=False) + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    return value
