"""MkDocs hook: show the generated field table of the configuration page as text.

The table between ``<!-- fields:start`` and ``<!-- fields:end -->`` in
``docs/configuration.md`` is committed exactly as
``python -m fedstale.config --markdown-table`` prints it (``tests/test_docs.py``
checks this). Some help texts contain ``<...>`` (``<output_dir>/<name>/``),
which Markdown would pass through as an HTML tag and the browser would hide,
so the hook escapes ``<`` and ``>`` in those rows when the site is built. The
file itself is left unchanged.
"""

from __future__ import annotations

import html
import re

_BLOCK = re.compile(r"(<!-- fields:start[^\n]*-->\n)(.*?)(<!-- fields:end -->)", re.S)


def _escape_text(row: str) -> str:
    # code spans (the names and defaults) already show their text as is
    parts = re.split(r"(`[^`]*`)", row)
    return "".join(p if p.startswith("`") else html.escape(p, quote=False) for p in parts)


def _escape_rows(match: re.Match[str]) -> str:
    rows = [_escape_text(row) for row in match.group(2).split("\n")]
    return match.group(1) + "\n".join(rows) + match.group(3)


def on_page_markdown(markdown: str, **kwargs: object) -> str:
    """Escape ``<``, ``>`` and ``&`` outside code spans in the generated table."""
    return _BLOCK.sub(_escape_rows, markdown)
