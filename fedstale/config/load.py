"""From values to a validated :class:`Config`: YAML files, overrides, Flower's run config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from .fields import check_rules, check_type, defaults, flatten, is_none, schema_fields
from .fields import subsection, unknown_key_error
from .rules import cross_checks
from .schema import SPEED_PARAM_NAMES, SPEED_PARAMETERS, Config, ConfigError

# --------------------------------------------------------------------------
# Dotted-name values to a Config
# --------------------------------------------------------------------------


def build_config(flat_values: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from dotted-name values.

    Fields not given keep their built-in default.

    Raises
    ------
    ConfigError
        Listing every invalid or unknown field.
    """
    fields = schema_fields()
    problems = [unknown_key_error(k, list(fields)) for k in flat_values if k not in fields]
    values = defaults()
    for key, value in flat_values.items():
        if key not in fields:
            continue
        coerced, error = check_type(key, value, fields[key])
        error = error or check_rules(key, coerced, fields[key].metadata)
        if error:
            problems.append(error)
        else:
            values[key] = coerced
    if problems:
        raise ConfigError(problems)
    config = _from_flat(values)
    problems = cross_checks(config, explicit=set(flat_values))
    if problems:
        raise ConfigError(problems)
    required, optional = SPEED_PARAMETERS[config.delay.speed.distribution]
    for param in SPEED_PARAM_NAMES:
        if param not in required + optional:
            setattr(config.delay.speed, param, None)
    return config


def _from_flat(values: dict[str, Any], cls: type = Config, prefix: str = "") -> Any:
    """The nested dataclasses holding ``values`` (every field's dotted name present)."""
    kwargs = {}
    for fld in dataclasses.fields(cls):
        name = f"{prefix}{fld.name}"
        section = subsection(fld)
        if section is not None:
            kwargs[fld.name] = _from_flat(values, section, name + ".")
        else:
            kwargs[fld.name] = values[name]
    return cls(**kwargs)


# --------------------------------------------------------------------------
# Files and Flower's run config
# --------------------------------------------------------------------------


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read an experiment YAML file into dotted-name values."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"config: file '{path}' not found"])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError([f"config: '{path}' is not valid YAML: {err}"]) from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"config: '{path}' must hold a mapping of sections, got {type(data).__name__}"])
    return flatten(data)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Load a YAML experiment and apply dotted-name ``overrides`` on top.

    An override that switches ``delay.speed.distribution`` to another
    distribution starts it from the overrides' own parameters: the file's
    parameters of the previous distribution are dropped rather than reported
    as unused.
    """
    values = read_yaml(path)
    overrides = dict(overrides or {})
    key = "delay.speed.distribution"
    if key in overrides and overrides[key] != values.get(key, defaults()[key]):
        for param in SPEED_PARAM_NAMES:
            values.pop(f"delay.speed.{param}", None)
    values.update(overrides)
    return build_config(values)


def resolve_config_path(name: str, search: list[Path]) -> Path:
    """Find ``name``: absolute, or relative to the first folder holding it."""
    candidate = Path(name)
    if candidate.is_absolute():
        return candidate
    for folder in search:
        if (folder / candidate).is_file():
            return folder / candidate
    return candidate


def run_config_overrides(
    run_config: dict[str, Any], explicit: dict[str, Any]
) -> dict[str, Any]:
    """The fields a Flower run config sets, by precedence.

    ``run_config`` is the fused run config (pyproject values plus
    ``--run-config``); ``explicit`` is what ``--run-config`` passed. A
    pyproject value counts only when it differs from the built-in default.
    """
    builtin = defaults()
    out = {}
    for key, value in run_config.items():
        if key == "config":
            continue
        if key in explicit:
            out[key] = explicit[key]
        elif key not in builtin or not _same(value, builtin[key]):
            out[key] = value
    return out


def _same(a: Any, b: Any) -> bool:
    if is_none(a) and is_none(b):
        return True
    return a == b and type(a) is type(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    )
