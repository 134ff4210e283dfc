"""The import contract: every import of tokenhub's modules points down its layers, with no cycle.

Every import counts: module level, inside functions and under ``TYPE_CHECKING``.
``nox -s lint`` runs this file as a script; the test suite runs it as tests.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tokenhub"

#: The layers, lowest first (docs/architecture.md draws them). A name covers its submodules.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "values",
        (
            "tokenhub._version",
            "tokenhub.errors",
            "tokenhub._models",
            "tokenhub._secret",
            "tokenhub._clock",
            "tokenhub._settings",
            "tokenhub._semconv",
            "tokenhub._redact",
            "tokenhub._storage",
            "tokenhub._runtime",
        ),
    ),
    (
        "pure logic",
        (
            "tokenhub._serde",
            "tokenhub._request",
            "tokenhub._sse",
            "tokenhub._ratelimit",
            "tokenhub.routing",
            "tokenhub.routing._policy",
            "tokenhub.routing._estimate",
            "tokenhub.routing._health",
            "tokenhub.routing._partial",
            "tokenhub.routing._rescue",
            "tokenhub.routing._router",
            "tokenhub.routing._checks",
            "tokenhub.routing._decide",
        ),
    ),
    (
        "edges",
        (
            "tokenhub._http",
            "tokenhub._httpx",
            "tokenhub._aiohttp",
            "tokenhub.http",
            "tokenhub.providers",
            "tokenhub._store",
            "tokenhub._postgres",
            "tokenhub._crypto",
            "tokenhub._vault",
            "tokenhub._telemetry",
            "tokenhub._logs",
            "tokenhub.routing._state",
            "tokenhub.routing._leases",
            "tokenhub.routing._redis_state",
            "tokenhub.routing._deployment",
            "tokenhub.routing._detach",
        ),
    ),
    (
        "machinery",
        (
            "tokenhub.routing._run",
            "tokenhub.routing._attempts",
            "tokenhub.routing._streaming",
            "tokenhub.routing._engine",
            "tokenhub._ledger",
            "tokenhub._control",
            "tokenhub._schema",
            "tokenhub._checks",
            "tokenhub._config",
            "tokenhub._assemble",
            "tokenhub._fleet",
        ),
    ),
    (
        "faces",
        (
            "tokenhub._stream",
            "tokenhub._hub",
            "tokenhub._sync",
            "tokenhub._admin",
            "tokenhub._cli",
            "tokenhub.testing",
            "tokenhub.__main__",
            "tokenhub",
        ),
    ),
)

#: Upward edges still to be removed (the Architecture issue): each is a known debt, and the
#: test fails once one disappears so that this list only shrinks.
KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()


def modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """The package modules each module imports, every import counted."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                ]
            else:
                continue
            for wanted in targets:
                target = wanted
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def layer_of(module: str) -> int | None:
    """The index of the layer that declares ``module`` (the longest declared prefix wins)."""
    best, best_len = None, -1
    for index, (_, names) in enumerate(LAYERS):
        for declared in names:
            if (module == declared or module.startswith(declared + ".")) and len(
                declared
            ) > best_len:
                best, best_len = index, len(declared)
    return best


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def problems() -> list[str]:
    """Everything that breaks the contract, one line each."""
    mods = modules()
    edges = imports(mods)
    out = [
        f"{m}: in no layer (declare it in tests/test_layers.py)"
        for m in mods
        if layer_of(m) is None
    ]
    upward = set()
    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            low, high = layer_of(target), layer_of(source)
            if low is not None and high is not None and low > high:
                upward.add((source, target))
    out += [
        f"{s} ({LAYERS[layer_of(s) or 0][0]}) imports {t} ({LAYERS[layer_of(t) or 0][0]})"
        for s, t in sorted(upward - KNOWN_UPWARD)
    ]
    out += [
        f"known upward edge {s} -> {t} is gone: remove it from KNOWN_UPWARD"
        for s, t in sorted(KNOWN_UPWARD - upward)
    ]
    for comp in cycles(edges):
        inner = sorted(f"{a} -> {b}" for a in comp for b in edges[a] if b in comp)
        if not any(tuple(e.split(" -> ")) in KNOWN_UPWARD for e in inner):  # a new cycle
            out.append(f"import cycle: {'; '.join(inner)}")
    return out


def test_imports_point_down_the_layers() -> None:
    """No module imports a higher layer (beyond the listed debts), and there is no new cycle."""
    assert [] == problems()


def test_imports_counts_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """An import inside a function or under TYPE_CHECKING is an edge like any other."""
    pkg = tmp_path / "tokenhub"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from tokenhub import _hub\n")
    (pkg / "_models.py").write_text("if TYPE_CHECKING:\n    from ._hub import Hub\n")
    (pkg / "_hub.py").write_text("from tokenhub.errors import f\n")
    edges = imports(modules(pkg))
    assert {"tokenhub._hub"} == edges["tokenhub.errors"] == edges["tokenhub._models"]
    assert [["tokenhub._hub", "tokenhub.errors"]] == cycles(edges)


def test_layers_are_ordered() -> None:
    """Values are the lowest layer, faces the highest; a name covers its submodules."""
    assert 4 == layer_of("tokenhub._hub")
    assert 0 == layer_of("tokenhub.errors")
    assert 2 == layer_of("tokenhub.providers.openai")
    assert 4 == layer_of("tokenhub.testing._server")


if __name__ == "__main__":
    found = problems()
    print(  # noqa: T201 - run as a script, it reports
        "\n".join(found) or "import contract: every import points down its layers"
    )
    sys.exit(1 if found else 0)
