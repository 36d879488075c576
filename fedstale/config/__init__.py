"""Experiment configuration: a typed schema, YAML loading, overrides, validation.

An experiment is a YAML file (see ``configs/``) with the sections below.
Every field has a built-in default, so a YAML file only states what differs.
The effective value of a field is, from strongest to weakest:

1. ``flwr run . --run-config "strategy.concurrency=5"`` (any field, by its
   dotted name);
2. a value in ``[tool.flwr.app.config]`` of ``pyproject.toml`` that differs
   from the built-in default (that table lists every field with its
   built-in default);
3. the YAML file named by the run-config key ``config``;
4. the built-in default.

Everything is validated before any work starts; :class:`ConfigError` lists
every bad field, one line each, naming the field and what it accepts.

``python -m fedstale.config CONFIG [key=value ...]`` prints the resolved
configuration or the errors.

Modules: :mod:`~fedstale.config.schema` (the sections and their fields),
:mod:`~fedstale.config.fields` (dotted-name views, checks of one field),
:mod:`~fedstale.config.rules` (rules between fields),
:mod:`~fedstale.config.load` (values, YAML files and Flower's run config to
a :class:`Config`), :mod:`~fedstale.config.describe` (the field reference
and pyproject's table), :mod:`~fedstale.config.cli` (the command line).
Everything public is importable from ``fedstale.config``.

Why the schema is hand-written, not pydantic
--------------------------------------------
pydantic 2.14 (installed with Flower) was measured against this schema: a
prototype with all 22 sections and 123 fields as ``BaseModel`` classes
(``Field(default, description=..., ge=/gt=/le=/lt=)``, ``Literal`` choices,
the cross-field rules called from a ``model_validator``) and the error
translation needed to keep the texts ``tests/test_config.py`` asserts (it
passes them, and ``tests/test_docs.py``; on 3,626 probes, every field times
27 odd values plus 300 three-field mixes, its ``problems`` lists equal
these). Lines for the same behaviour, against the single ``config.py`` this
package was split from (same module docstring):

=======================================  ===========  ========
part                                     hand-written pydantic
=======================================  ===========  ========
imports, ConfigError, field helpers/types        59       130
sections and fields, SPEED tables               391       365
flat views, coercion, error texts,              171       137
build_config
cross-field rules, YAML, overrides              341       341
describe_fields                                  13        11
tables and CLI                                   62        62
total                                          1037      1046
=======================================  ===========  ========

Field declarations are as long either way (``Field(0.6, description=...,
gt=0, le=1)`` for ``_f(0.6, ..., gt=0, le=1)``); what pydantic saves (the
type checks and bounds: 81 lines of ``_check_type``, ``_check_rules``,
``_from_flat``...) it costs back in 108 lines of glue: types that coerce as
Flower and YAML pass values (lax mode takes ``yes`` as true, ``'5'`` as an
integer and ``nan`` as a number; strict mode refuses ``'0.25'`` and
``30.0``), choices read from the dataset/model registries, a base model
turning ``none`` into None, and the translation of its errors. Of
(a)-(f) pydantic by itself keeps (a) the dotted path (``loc``), (d) every
field error at once and most of (f) (``description``, ``Literal``
arguments); it loses (b)/(c) the wording and the "did you mean" of bad
choices and unknown fields (``Input should be 'fedasync', 'fedbuff',
'fedavg' or 'dynamic' [type=literal_error, ...]``, ``Extra inputs are not
permitted``) and needs (e) done by hand; a ``model_validator`` raises one
error, so several cross-field problems travel packed in one message;
errors come in schema order, not input order; an optional float's bound
error shows the unconverted input. Not smaller, so not adopted (and
``Config`` stays a dataclass, which tests read with ``dataclasses.fields``).
"""

from .cli import main
from .describe import describe_fields, markdown_field_rows, toml_defaults, toml_run_config_table
from .fields import defaults, flatten, schema_fields, to_dict
from .load import build_config, load_config, read_yaml, resolve_config_path, run_config_overrides
from .rules import TEXT_MODELS
from .schema import (
    NONE_STRINGS,
    SPEED_PARAM_NAMES,
    SPEED_PARAMETERS,
    AdaptiveConfig,
    AttackConfig,
    AvailabilityConfig,
    CentralDpConfig,
    ClientConfig,
    CommConfig,
    CompressionConfig,
    Config,
    ConfigError,
    DataConfig,
    DelayConfig,
    DynamicConfig,
    EvaluationConfig,
    FilterConfig,
    LocalDpConfig,
    ModelConfig,
    OortConfig,
    OutputConfig,
    PrivacyConfig,
    RobustConfig,
    RunConfig,
    SecAggConfig,
    SpeedConfig,
    StalenessConfig,
    SyntheticConfig,
    StopConfig,
    StrategyConfig,
    TrustConfig,
)

__all__ = [
    "NONE_STRINGS", "SPEED_PARAMETERS", "SPEED_PARAM_NAMES", "TEXT_MODELS",
    "AdaptiveConfig", "AttackConfig", "AvailabilityConfig", "CentralDpConfig", "ClientConfig", "CommConfig", "CompressionConfig",
    "Config", "ConfigError", "DataConfig", "DelayConfig", "DynamicConfig", "EvaluationConfig",
    "FilterConfig", "LocalDpConfig", "ModelConfig", "OortConfig", "OutputConfig", "PrivacyConfig",
    "RobustConfig", "RunConfig", "SecAggConfig", "SpeedConfig", "StalenessConfig", "StopConfig",
    "StrategyConfig", "SyntheticConfig", "TrustConfig",
    "build_config", "defaults", "describe_fields", "flatten", "load_config", "main",
    "markdown_field_rows", "read_yaml", "resolve_config_path", "run_config_overrides",
    "schema_fields", "to_dict", "toml_defaults", "toml_run_config_table",
]
