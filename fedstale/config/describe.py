"""The field reference: docs/configuration.md's table rows and pyproject.toml's run-config table."""

from __future__ import annotations

from typing import Any

from .fields import choices_of, defaults, schema_fields


def toml_defaults() -> dict[str, Any]:
    """The ``[tool.flwr.app.config]`` entries: each field's default, none as "none"."""
    return {k: ("none" if v is None else v) for k, v in defaults().items()}


def describe_fields() -> list[tuple[str, str, str]]:
    """(dotted name, default, help) of every field, for docs and ``--help``."""
    rows = []
    for name, fld in schema_fields().items():
        default = fld.default
        shown = "none" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        extra = ""
        if "choices" in fld.metadata:
            extra = f" (one of: {', '.join(choices_of(fld.metadata))})"
        rows.append((name, shown, fld.metadata["help"] + extra))
    return rows


def markdown_field_rows() -> str:
    """The rows of docs/configuration.md's field table (``| field | default | meaning |``)."""
    return "\n".join(
        f"| `{name}` | `{default if default else chr(34) * 2}` | {text} |"
        for name, default, text in describe_fields()
    )


def toml_run_config_table(config_path: str = "configs/default.yaml") -> str:
    """The ``[tool.flwr.app.config]`` tables of pyproject.toml, as TOML."""
    import tomli_w  # pylint: disable=import-outside-toplevel

    nested: dict[str, Any] = {"config": config_path}
    for key, value in toml_defaults().items():
        *parents, leaf = key.split(".")
        table = nested
        for part in parents:
            table = table.setdefault(part, {})
        table[leaf] = value
    return tomli_w.dumps({"tool": {"flwr": {"app": {"config": nested}}}})
