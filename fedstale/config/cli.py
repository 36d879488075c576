"""``python -m fedstale.config CONFIG [key=value ...]``: validate and print an experiment."""

from __future__ import annotations

import yaml

from .describe import describe_fields, markdown_field_rows, toml_run_config_table
from .fields import to_dict
from .load import load_config
from .schema import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Validate a config file: ``python -m fedstale.config FILE [key=value ...]``."""
    import argparse  # pylint: disable=import-outside-toplevel

    if argv is None:
        import sys  # pylint: disable=import-outside-toplevel

        argv = sys.argv[1:]
    if argv[:1] == ["--toml-table"]:  # maintainers: regenerate pyproject.toml's table
        print(toml_run_config_table(), end="")
        return 0
    if argv[:1] == ["--markdown-table"]:  # maintainers: regenerate docs/configuration.md's table
        print(markdown_field_rows())
        return 0

    parser = argparse.ArgumentParser(
        prog="python -m fedstale.config",
        description="Validate a fedstale experiment and print it resolved.",
        epilog="Fields: " + "; ".join(f"{n} (default {d})" for n, d, _ in describe_fields()),
    )
    parser.add_argument("config", help="YAML experiment file, e.g. configs/default.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.name=value (YAML syntax)")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            parser.error(f"override '{item}' must look like dotted.name=value")
        overrides[key.strip()] = yaml.safe_load(raw)
    try:
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(err)
        return 2
    print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
    return 0
