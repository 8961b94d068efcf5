"""The error of a configuration that cannot run, and the small checks every section shares."""

from collections.abc import Iterable

__all__ = ["ConfigError", "check_choice", "check_optional_positive"]


class ConfigError(ValueError):
    """A configuration that cannot run: unknown key or preset, wrong type, inconsistent values."""


def check_choice(name: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def check_optional_positive(name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
