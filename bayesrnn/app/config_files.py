"""Settings from files and the command line: TOML in and out, ``--set`` overrides, layering.

Values are layered, later winning: the defaults (the small offline run), a preset, a TOML file,
then ``--set section.key=value`` overrides and the CLI's shorthand flags. Every key is checked
against the dataclass fields, so a typo is an error rather than a silently ignored setting.

TOML has no null: optional values are written and read as the string ``"none"``.
"""

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bayesrnn.app.config import (
    NONE,
    RUNTIME_KEYS,
    SECTIONS,
    TOP_LEVEL,
    ConfigError,
    DataConfig,
    EvaluationConfig,
    GuideConfig,
    ModelConfig,
    RunConfig,
)
from bayesrnn.app.config_limits import LIMITS
from bayesrnn.app.presets import PRESETS
from bayesrnn.data.atomic import atomic_write
from bayesrnn.data.checksums import DataError
from bayesrnn.data.input_files import read_input_bytes
from bayesrnn.inference.training.trainer import TrainerConfig


def _section_types(section: type) -> dict[str, Any]:
    hints = typing.get_type_hints(section)
    return {f.name: hints[f.name] for f in dataclasses.fields(section)}


_SECTION_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "guide": GuideConfig,
    "trainer": TrainerConfig,
    "evaluation": EvaluationConfig,
}


def _range_of(key: str) -> str:
    """`` in [low, high]`` for a key with a range, for type errors to name it too."""
    return f" in {LIMITS[key]}" if key in LIMITS else ""


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert a TOML/override value to the field's type, or raise ConfigError."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(None) in options and (value is None or value == NONE):
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[-1] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if isinstance(value, str):  # "0,0.5,0.9" from the command line
            inner = value.strip().removeprefix("[").removesuffix("]")  # [a,b] unquoted, or a,b
            value = [_toml_scalar(v.strip()) for v in inner.split(",") if v.strip()]
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = [value]  # one number: a list of one (--set data.lags=11)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(v, item, key) for v in value)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} must be an integer{_range_of(key)}, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number{_range_of(key)}, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # pragma: no cover - fields are fixed


def apply_values(config: RunConfig, values: Mapping[str, Any], origin: str) -> RunConfig:
    """Return ``config`` with the nested ``values`` (sections of keys) applied.

    ``origin`` names where the values came from (a file, a preset, ``--set``) in errors.
    """
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for name, value in values.items():
        if name in TOP_LEVEL:
            top[name] = _coerce(value, str, name)
        elif name in SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{origin}: [{name}] must be a table of keys")
            sections[name] = _apply_section(getattr(config, name), name, value, origin)
        else:
            known = ", ".join((*TOP_LEVEL, *SECTIONS))
            raise ConfigError(f"{origin}: unknown config key {name!r} (known: {known})")
    try:
        return dataclasses.replace(config, **top, **sections)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{origin}: {error}") from error


def _apply_section(current: Any, name: str, values: Mapping[str, Any], origin: str) -> Any:
    types_ = _section_types(type(current))
    changes = {}
    for key, value in values.items():
        if key not in types_:
            raise ConfigError(
                f"{origin}: unknown config key '{name}.{key}' "
                f"(known in [{name}]: {', '.join(types_)})"
            )
        try:
            changes[key] = _coerce(value, types_[key], f"{name}.{key}")
        except ConfigError as error:
            raise ConfigError(f"{origin}: {error}") from error
    try:
        return dataclasses.replace(current, **changes)
    except ConfigError as error:
        raise ConfigError(f"{origin}: {error}") from error
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{origin}: [{name}] {error}") from error


def _toml_scalar(raw: str) -> Any:
    """A TOML value if ``raw`` parses as one (numbers, booleans, lists), else the bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
    except RecursionError:
        raise ConfigError(f"--set value nested too deeply: {raw[:40]}...") from None


def parse_override(text: str) -> dict[str, dict[str, Any]]:
    """``section.key=value`` → ``{section: {key: value}}``; the value is read as TOML if it
    parses (numbers, true/false, ["lists"]), else kept as a bare string (``guide.name=gal``)."""
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    return {section: {name: _toml_scalar(raw.strip())}}


def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; --config takes a TOML file")
    try:
        return tomllib.loads(read_input_bytes(path, "config file").decode("utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"config file not found: {path}") from error
    except DataError as error:  # not a regular file, or too large
        raise ConfigError(str(error)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    except RecursionError:  # tomllib recurses per nested array or table
        raise ConfigError(f"{path}: nested too deeply to be a config file") from None


def _with_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    config = apply_values(RunConfig(), PRESETS[name].values, f"preset {name}")
    return dataclasses.replace(config, preset=name)


# The preset a task starts from when none is named: the defaults are a language model's
# (Fortunato's scale-mixture prior), which leaves a small classifier at chance.
TASK_PRESETS = {"forecast": "forecast", "classify": "classify"}


def resolve_config(
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Mapping[str, Any]] | None = None,
) -> RunConfig:
    """Layer defaults < preset < config file < ``--set`` overrides < flags.

    A config file may name its own preset (``preset = "gal-medium"``); ``preset`` (the
    ``--preset`` flag) wins over it. Without one, ``task = "forecast"`` starts from the
    ``forecast`` preset, ``task = "classify"`` from ``classify``, anything else from
    ``default``. Relative data paths are made absolute.
    """
    file_values = load_toml(config_file) if config_file is not None else {}
    task = (flags or {}).get("task") or file_values.get("task")
    name = preset or file_values.get("preset") or TASK_PRESETS.get(task, "default")
    if not isinstance(name, str):
        raise ConfigError(f"preset must be a string, got {name!r}")
    config = _with_preset(name)
    if file_values:
        rest = {k: v for k, v in file_values.items() if k != "preset"}
        config = apply_values(config, rest, str(config_file))
    for text in overrides:
        config = apply_values(config, parse_override(text), f"--set {text}")
    if flags:
        config = apply_values(config, flags, "command line")
    return _absolute_paths(dataclasses.replace(config, preset=name))


def _absolute_paths(config: RunConfig) -> RunConfig:
    data = config.data
    changes: dict[str, Any] = {}
    if data.dir is not None:
        changes["dir"] = str(Path(data.dir).expanduser().resolve())
    if data.is_path:
        changes["source"] = str(Path(data.source).expanduser().resolve())
    return dataclasses.replace(config, data=dataclasses.replace(data, **changes))


def config_from_dict(values: Mapping[str, Any], origin: str) -> RunConfig:
    """A resolved config read back (from a run directory): defaults plus every stored value."""
    return apply_values(RunConfig(), values, origin)


# --- writing ------------------------------------------------------------------------------------


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """Nested plain dict (tuples as lists), the shape of the TOML file."""
    out: dict[str, Any] = {"task": config.task, "preset": config.preset}
    for name in SECTIONS:
        section = getattr(config, name)
        out[name] = {
            f.name: list(v) if isinstance(v := getattr(section, f.name), tuple) else v
            for f in dataclasses.fields(section)
        }
    return out


def comparable(config: RunConfig) -> dict[str, Any]:
    """The values that define what a run computes (runtime keys such as the device left out)."""
    out = config_to_dict(config)
    for key in RUNTIME_KEYS:
        section, _, name = key.partition(".")
        out[section].pop(name, None)
    return out


def _toml_value(value: Any) -> str:
    if value is None:
        return json.dumps(NONE)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def dumps_toml(config: RunConfig, header: str = "") -> str:
    """The resolved config as TOML that :func:`resolve_config` reads back to the same values."""
    data = config_to_dict(config)
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"task = {_toml_value(data['task'])}", f"preset = {_toml_value(data['preset'])}"]
    for name in SECTIONS:
        lines += ["", f"[{name}]"]
        lines += [f"{key} = {_toml_value(value)}" for key, value in data[name].items()]
    return "\n".join(lines) + "\n"


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) whole or not at all, with the umask's permissions."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_config(config: RunConfig, path: str | os.PathLike[str], header: str = "") -> Path:
    """Write the resolved config atomically."""
    return write_text_atomic(path, dumps_toml(config, header))
