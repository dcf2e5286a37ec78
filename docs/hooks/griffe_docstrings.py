"""Griffe extension for the API reference: render curvscope's docstrings as written, without editing them.

The docstrings follow Google style with two habits Griffe's parser reads differently:

- ``Example:`` (singular) opens a doctest; Griffe makes it an admonition and the ``>>>`` lines
  become nested quotes. It is renamed ``Examples:`` so the doctest renders as code.
- Sphinx roles (``:class:`~curvscope.common.Status```) are kept as inline code (the last
  component when the target starts with ``~``), so no role markup shows on the page.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", flags=re.M)
_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|const|ref):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    tilde, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def rewrite(text: str) -> str:
    """The docstring as the Google-style parser should read it."""
    return _ROLE.sub(_role, _EXAMPLE.sub(r"\1Examples:", text))


class CurvscopeDocstrings(griffe.Extension):
    """Rewrite each docstring once, when its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
