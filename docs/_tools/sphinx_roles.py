"""Griffe extension for the API pages: render Sphinx markup found in docstrings.

fedstale's numpy docstrings use Sphinx roles (``:class:`~a.b.C```) and
reStructuredText literal blocks (``Example::``). mkdocstrings renders
Markdown, so this turns each role into inline code (``~`` keeps the last
component, as Sphinx does) and ``::`` at the end of a line into ``:``,
leaving the indented block after it as a Markdown code block. Only the
rendered docs change; the docstrings in the code stay as they are.
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|obj|exc|const):`(~?)([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    if match.group(1):
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def convert(text: str) -> str:
    """Sphinx roles to inline code, ``::`` line ends to ``:``."""
    text = _ROLE.sub(_role, text)
    return re.sub(r"(?<=\S)::$", ":", text, flags=re.M)


class SphinxRoles(griffe.Extension):
    """Rewrite each docstring once it is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: object) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
