"""The public face of tokenhub.testing: its names, and what it imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import tokenhub.testing

ROOT = Path(__file__).parent.parent.parent
# The faces above the fake (the Hub, its sync facade, admin, CLI) and the package root importing them.
FACES = {"tokenhub", "tokenhub._hub", "tokenhub._sync", "tokenhub._admin", "tokenhub._cli"}


def documented(module: str) -> list[str]:
    """The ``members:`` listed under ``::: module`` in the API reference."""
    api = (ROOT / "docs" / "api.md").read_text()
    block = re.search(rf"^::: {re.escape(module)}\n((?:    .*\n)+)", api, re.MULTILINE)
    assert block is not None
    return re.findall(r"^        - (\S+)$", block.group(1), re.MULTILINE)


def is_module(name: str) -> bool:
    """Whether ``name`` is a module or package of this repository."""
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at module level, in functions or under TYPE_CHECKING."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            for alias in node.names:  # `from tokenhub import _vault` imports tokenhub._vault
                sub = f"{node.module}.{alias.name}"
                out.add(sub if is_module(sub) else node.module)
    return out


class TestPublicNames:
    def test_all_is_the_documented_list(self) -> None:
        """__all__ is exactly the names the API reference documents, sorted."""
        assert sorted(documented("tokenhub.testing")) == tokenhub.testing.__all__

    def test_every_public_name_is_exported(self) -> None:
        """Every name in __all__ is an attribute of the package."""
        assert [] == [n for n in tokenhub.testing.__all__ if not hasattr(tokenhub.testing, n)]


class TestImports:
    def test_only_lower_layers(self) -> None:
        """The fake's modules import no face of tokenhub (Hub, SyncHub, admin, CLI, the root)."""
        modules = sorted((ROOT / "tokenhub" / "testing").glob("*.py"))
        used = {m.name: sorted(imported(m) & FACES) for m in modules}
        assert {m.name: [] for m in modules} == used

    def test_vault_loads_lazily(self) -> None:
        """Importing tokenhub.testing loads neither the vault nor PyNaCl."""
        code = "import sys, tokenhub.testing\nprint(sorted({'nacl', 'tokenhub._vault'} & set(sys.modules)))"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == out.stdout.strip()
