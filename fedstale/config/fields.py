"""Flat (dotted-name) views of the schema, and the checks of one field at a time."""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any

from .schema import NONE_STRINGS, Config


# --------------------------------------------------------------------------
# Flat views of the schema
# --------------------------------------------------------------------------


def subsection(fld: dataclasses.Field) -> type | None:
    """The dataclass of a nested section field, or None for a leaf."""
    factory = fld.default_factory
    if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory):
        return factory  # type: ignore[return-value]
    return None


def schema_fields(cls: type = Config, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf field of the schema, keyed by its dotted name."""
    out: dict[str, dataclasses.Field] = {}
    for fld in dataclasses.fields(cls):
        name = f"{prefix}{fld.name}"
        section = subsection(fld)
        if section is not None:
            out.update(schema_fields(section, name + "."))
        else:
            out[name] = fld
    return out


def defaults() -> dict[str, Any]:
    """Built-in default of every field, keyed by dotted name."""
    return flatten(to_dict(Config()))


def flatten(nested: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def to_dict(config: Config) -> dict[str, Any]:
    """The configuration as nested plain data (for ``config.yaml``)."""
    return dataclasses.asdict(config)


# --------------------------------------------------------------------------
# Checks of one field
# --------------------------------------------------------------------------


def is_none(value: Any) -> bool:
    """None, or a string meaning unset (``none``, ``null``, empty; any case)."""
    return value is None or (isinstance(value, str) and value.strip().lower() in NONE_STRINGS)


def check_type(name: str, value: Any, fld: dataclasses.Field) -> tuple[Any, str | None]:
    """Coerce ``value`` to the field's type, or return an error."""
    meta = fld.metadata
    kind = fld.type if isinstance(fld.type, str) else getattr(fld.type, "__name__", "")
    base = kind.replace(" | None", "")
    if is_none(value):
        if meta.get("optional"):
            return None, None
        if "none" in choices_of(meta):
            return "none", None  # a choice named none (attack.name: none)
        return None, f"{name}: a value is required (got none)"
    if base == "bool":
        if isinstance(value, bool):
            return value, None
        return None, f"{name}: expected true or false, got {value!r}"
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()
        ):
            return None, f"{name}: expected an integer, got {value!r}"
        return int(value), None
    if base == "float":
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None, f"{name}: expected a number, got {value!r}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None, f"{name}: expected a number, got {value!r}"
        return float(value), None
    if not isinstance(value, str):
        return None, f"{name}: expected a string, got {value!r}"
    return value, None


def choices_of(meta: Any) -> tuple[str, ...]:
    """A field's accepted values; a callable ``choices`` is asked each time
    (datasets: :func:`fedstale.data.register_torchvision_dataset` adds names)."""
    choices = meta.get("choices", ())
    return tuple(choices()) if callable(choices) else tuple(choices)


def check_rules(name: str, value: Any, meta: Any) -> str | None:
    """Check choices and bounds."""
    if value is None:
        return None
    choices = choices_of(meta) if "choices" in meta else None
    if choices is not None and value not in choices:
        hint = difflib.get_close_matches(str(value), choices, n=1)
        extra = f" (did you mean '{hint[0]}'?)" if hint else ""
        return f"{name}: '{value}' is not one of {', '.join(choices)}{extra}"
    for rule, ok, text in (
        ("ge", lambda v, b: v >= b, ">="),
        ("gt", lambda v, b: v > b, ">"),
        ("le", lambda v, b: v <= b, "<="),
        ("lt", lambda v, b: v < b, "<"),
    ):
        if rule in meta and not ok(value, meta[rule]):
            return f"{name}: must be {text} {meta[rule]:g}, got {value!r}"
    return None


def unknown_key_error(key: str, known: list[str]) -> str:
    """The problem line of a dotted name that is no field, with the closest one."""
    hint = difflib.get_close_matches(key, known, n=1)
    extra = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"{key}: unknown field{extra} (see docs/configuration.md)"
