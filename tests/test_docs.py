"""The README and configs stay true to the code."""

from __future__ import annotations

import re

from fedstale.config import describe_fields
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS
from fedstale.strategies import STRATEGIES
from tests.helpers import CONFIGS, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_config_field_with_its_default_and_help():
    for name, default, text in describe_fields():
        shown = default if default else '""'
        assert f"| `{name}` | `{shown}` | {text} |" in README, name


def test_readme_table_has_no_field_the_schema_lacks():
    names = {n for n, _, _ in describe_fields()}
    listed = {n for n in re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", README, flags=re.M)}
    assert listed - names == set()


def test_readme_names_every_output_column_and_strategy():
    for column in METRICS_COLUMNS + CLIENT_COLUMNS:
        assert column in README, column
    for name in STRATEGIES:
        assert f"| `{name}` |" in README, name


def test_readme_commands_name_existing_configs_and_scripts():
    for path in set(re.findall(r"configs/[a-z0-9_]+\.yaml", README)):
        assert (ROOT / path).is_file(), path
    for path in set(re.findall(r"simulations/[a-z_]+\.py", README)):
        assert (ROOT / path).is_file(), path
    assert {p.name for p in CONFIGS.glob("*.yaml")} <= set(
        re.findall(r"configs/([a-z0-9_]+\.yaml)", README)
    )
