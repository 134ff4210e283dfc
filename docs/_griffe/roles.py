"""A griffe extension for the docs build: render reST roles as Markdown cross-references.

tokenhub's docstrings use Sphinx roles (``:class:`Hub```, ``:meth:`~tokenhub.Hub.add_provider```).
Before mkdocstrings renders a docstring, each role becomes an *optional* autoref: a link when the
target is documented, plain code otherwise (so the strict build never warns). ``:doc:`vault```
becomes a link to ``docs/vault.md`` titled with its first heading (through the autoref that the
``autorefs`` plugin registers for that heading), or plain code while the page does not exist.
A trailing ``::`` (reST's literal-block marker) becomes ``:``.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Any

import griffe
from markdown.extensions.toc import slugify

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|obj|exc|data):`(~?)([^`<>]+?)`")
_DOC = re.compile(r":doc:`([\w/-]+)`")
_LITERAL = re.compile(r"::$", re.MULTILINE)
_HEADING = re.compile(r"^# (.+?)(?:\s*\{\s*#([\w-]+)\s*\})?\s*$")
_DOCS = Path(__file__).resolve().parent.parent


class ReSTRoles(griffe.Extension):
    """Rewrite reST roles in every docstring of the package."""

    def on_package(self, *, pkg: griffe.Module, **_kwargs: Any) -> None:
        """Rewrite the docstrings once the whole package is loaded."""
        public = _public_paths(pkg)
        for obj in _walk(pkg):
            doc = obj.docstring
            if doc is not None:
                text = _DOC.sub(_doc, _ROLE.sub(partial(_ref, obj, public), doc.value))
                doc.value = _LITERAL.sub(":", text)


def _walk(obj: griffe.Object) -> Any:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _public_paths(pkg: griffe.Module) -> dict[str, str]:
    """Map canonical paths (``tokenhub._hub.Hub``) to the public ones the docs render."""
    out: dict[str, str] = {}
    modules = [pkg, *(m for m in pkg.modules.values() if not m.name.startswith("_"))]
    for module in modules:
        for member in module.members.values():
            if member.is_alias and not member.name.startswith("_"):
                out.setdefault(member.target_path, member.path)
    return out


def _resolve(obj: griffe.Object, target: str) -> str:
    if target.startswith("tokenhub"):
        return target
    head, _, rest = target.partition(".")
    scope = obj if obj.is_class or obj.is_module else obj.parent
    try:
        base = scope.resolve(head) if scope is not None else head
    except griffe.NameResolutionError:
        return target
    return f"{base}.{rest}" if rest else base


def _public(path: str, public: dict[str, str]) -> str:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in public:
            return ".".join([public[prefix], *parts[i:]])
    return path


def _ref(obj: griffe.Object, public: dict[str, str], m: re.Match[str]) -> str:
    tilde, target = m.groups()
    shown = target.rsplit(".", 1)[-1] if tilde else target
    identifier = _public(_resolve(obj, target), public)
    return f'<autoref identifier="{identifier}" optional><code>{shown}</code></autoref>'


def _doc(m: re.Match[str]) -> str:
    """Link to a page through the autoref of its first heading (``# Vault and CLI``).

    A heading with an explicit anchor (``# Store { #store-page }``) is linked by that anchor, for
    pages whose title is also a heading elsewhere (``## `store``` in the configuration reference).
    """
    page = _DOCS / f"{m.group(1)}.md"
    if not page.is_file():
        return f"<code>{m.group(1)}</code>"
    lines = page.read_text(encoding="utf-8").splitlines()
    heading = next((h for line in lines if (h := _HEADING.match(line))), None)
    if heading is None:
        return f"<code>{m.group(1)}</code>"
    title, anchor = heading.group(1), heading.group(2)
    return f'<autoref identifier="{anchor or slugify(title, "-")}">{title}</autoref>'
