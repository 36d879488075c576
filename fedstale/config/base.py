"""The schema's building blocks: :class:`ConfigError` and the field helpers.

Kept apart from :mod:`fedstale.config.schema` so that sections defined in
their own modules (:mod:`fedstale.config.data_schema`) use them without a cycle.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

NONE_STRINGS = ("none", "null", "")


class ConfigError(ValueError):
    """An invalid experiment configuration; the message lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _f(default: Any, help: str, **rules: Any) -> Any:  # pylint: disable=redefined-builtin
    """A schema field: its default, its help text and its validation rules.

    Rules: ``choices`` (allowed values), ``ge``/``gt``/``le``/``lt`` (bounds)
    and ``optional`` (None allowed, written ``none`` in YAML/TOML).
    """
    return field(default=default, metadata={"help": help, **rules})


def _section(cls: type) -> Any:
    return field(default_factory=cls)
