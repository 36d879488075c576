"""The README, the documentation site (docs/) and the configs stay true to the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

from fedstale.config import describe_fields
from fedstale.results import CLIENT_COLUMNS, METRICS_COLUMNS
from fedstale.strategies import STRATEGIES
from tests.helpers import CONFIGS, ROOT

README_PATH = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README_PATH, *sorted(DOCS.rglob("*.md"))]
TEXTS = {page: page.read_text(encoding="utf-8") for page in PAGES}
ALL_DOCS = "\n".join(TEXTS.values())
"""README.md and every docs/**/*.md page, the text the tests below search."""
CONFIG_PAGE = (DOCS / "configuration.md").read_text(encoding="utf-8")

MAX_README_LINES = 320
MKDOCS_TIMEOUT_S = 300


def _field_row(name: str, default: str, text: str) -> str:
    shown = default if default else '""'
    return f"| `{name}` | `{shown}` | {text} |"


# --- the configuration reference ----------------------------------------------------


def test_configuration_page_table_is_exactly_what_the_schema_gives():
    """The committed table is ``python -m fedstale.config --markdown-table`` (regenerate it there)."""
    block = re.search(r"<!-- fields:start[^\n]*-->\n(.*?)\n<!-- fields:end -->", CONFIG_PAGE, re.S)
    assert block, "docs/configuration.md lost its <!-- fields:start/end --> markers"
    expected = ["| field | default | meaning |", "|---|---|---|"]
    expected += [_field_row(*row) for row in describe_fields()]
    assert block.group(1).split("\n") == expected


def test_configuration_page_lists_every_config_field_with_its_default_and_help():
    for name, default, text in describe_fields():
        assert _field_row(name, default, text) in CONFIG_PAGE, name


def test_docs_have_no_field_table_row_the_schema_lacks():
    names = {n for n, _, _ in describe_fields()}
    listed = set(re.findall(r"^\| `([a-z_]+\.[a-z_.]+)` \|", ALL_DOCS, flags=re.M))
    assert listed - names == set()


# --- names in the docs exist ---------------------------------------------------------


def test_docs_name_every_output_column_and_strategy():
    for column in METRICS_COLUMNS + CLIENT_COLUMNS:
        assert column in ALL_DOCS, column
    for name in STRATEGIES:
        assert f"| `{name}` |" in ALL_DOCS, name


def test_docs_commands_name_existing_configs_and_scripts():
    for path in set(re.findall(r"configs/[a-z0-9_]+\.yaml", ALL_DOCS)):
        assert (ROOT / path).is_file(), path
    for path in set(re.findall(r"simulations/[a-z_]+\.py", ALL_DOCS)):
        assert (ROOT / path).is_file(), path
    assert {p.name for p in CONFIGS.glob("*.yaml")} <= set(
        re.findall(r"configs/([a-z0-9_]+\.yaml)", ALL_DOCS)
    )


GENERATED = ("docker/certificates",)
"""Paths the docs name that a command writes (``python -m fedstale.certificates``)."""


def test_docs_name_existing_code_test_and_docker_files():
    found = re.findall(r"(?<![\w/~.-])((?:fedstale|tests|docker)/[\w/.-]*\w)", ALL_DOCS)
    paths = {p for p in found if not p.startswith(GENERATED)}
    assert "fedstale/strategies/base.py" in paths
    for path in paths:
        assert (ROOT / path).exists(), path


def test_docs_python_m_commands_name_existing_modules():
    modules = set(re.findall(r"python -m (fedstale(?:\.\w+)+)", ALL_DOCS))
    assert "fedstale.config" in modules
    for module in modules:
        path = ROOT.joinpath(*module.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__main__.py").is_file(), module


# --- the README is a front page; links and snippets resolve --------------------------


def test_readme_is_a_front_page():
    lines = TEXTS[README_PATH].count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move text to docs/"


def _without_fences(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)


def _outside_code(text: str) -> str:
    """``text`` without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", _without_fences(text))


def _heading_texts(text: str) -> list[str]:
    headings = re.findall(r"^#{1,6} +(.+?) *#*$", _without_fences(text), flags=re.M)
    cleaned = []
    for heading in headings:
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
        cleaned.append(heading.replace("`", "").replace("*", ""))
    return cleaned


def _mkdocs_slug(heading: str) -> str:
    """Python-Markdown's ``toc`` slug (what MkDocs gives a heading)."""
    value = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(r"[-\s]+", "-", value)


def _github_slug(heading: str) -> str:
    """GitHub's anchor of a heading (what the README's links are read with)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = _heading_texts(path.read_text(encoding="utf-8"))
    return {_mkdocs_slug(h) for h in headings} | {_github_slug(h) for h in headings}


def test_every_relative_link_points_at_an_existing_file_and_heading():
    problems = []
    for page, text in TEXTS.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", _outside_code(text)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}: {target}"
            if not path.exists():
                problems.append(f"{where}: no such file")
                continue
            if not anchor or path.suffix != ".md":
                continue
            if ":::" in path.read_text(encoding="utf-8"):
                continue  # an API page: mkdocstrings makes its anchors, mkdocs --strict checks them
            if anchor not in _anchors(path):
                problems.append(f"{where}: no heading with anchor #{anchor}")
    assert problems == []


def test_every_snippet_the_docs_include_exists():
    """``--8<-- "README.md:quickstart"`` needs the start/end markers in README.md."""
    includes = set(re.findall(r'^--8<-- "([^":]+)(?::([\w-]+))?"$', ALL_DOCS, flags=re.M))
    assert ("README.md", "quickstart") in includes
    for file, section in includes:
        source = (ROOT / file).read_text(encoding="utf-8")
        if section:
            assert f"--8<-- [start:{section}]" in source, (file, section)
            assert f"--8<-- [end:{section}]" in source, (file, section)


# --- the site builds ----------------------------------------------------------------


def test_mkdocs_build_strict(tmp_path):
    """``mkdocs build --strict``: every page, link, anchor, snippet and API page resolves."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=MKDOCS_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "strategies" / "index.html").read_text(encoding="utf-8")
    for name in ("AsyncStrategy", "FedAsync", "FedBuff", "FedAvg", "DynamicStaleness", "SecAggFedBuff"):
        assert f'id="fedstale.strategies.{name}"' in api, name
