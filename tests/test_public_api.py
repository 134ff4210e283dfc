"""The public surface: each public module's ``__all__`` is exactly what the docs document."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import tokenhub
import tokenhub.errors
import tokenhub.http
import tokenhub.providers
import tokenhub.routing
from tokenhub._sse import SSEError

DOCS = Path(__file__).parent.parent / "docs"


def _members(page: str, module: str) -> list[str]:
    """The ``members:`` list of the mkdocstrings block for ``module`` on ``page``."""
    text = (DOCS / page).read_text()
    block = text.split(f"::: {module}\n", 1)[1].split(":::", 1)[0]
    return re.findall(r"^ {8}- (\w+)$", block.split("members:", 1)[1], re.MULTILINE)


def test_top_level_names_are_the_documented_ones() -> None:
    """``tokenhub.__all__`` is the API reference's member list (plus ``__version__``)."""
    assert sorted(_members("api.md", "tokenhub")) == sorted(
        n for n in tokenhub.__all__ if n != "__version__"
    )


def test_error_names_are_the_documented_tree() -> None:
    """``tokenhub.errors.__all__`` is the tree drawn in docs/errors.md, plus its two helpers."""
    tree = (DOCS / "errors.md").read_text().split("```text\n", 1)[1].split("```", 1)[0]
    drawn = set(re.findall(r"[├└]── (\w+)", tree)) | {"TokenhubError"}
    assert drawn | {"ErrorClass", "error_type_for"} == set(tokenhub.errors.__all__)


def test_provider_names_are_the_documented_table() -> None:
    """``tokenhub.providers.__all__`` is the table at the top of docs/providers.md."""
    table = (
        (DOCS / "providers.md").read_text().split("| Name | What it is |", 1)[1].split("\n\n")[0]
    )
    assert sorted(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)) == sorted(
        tokenhub.providers.__all__
    )


def test_http_names_are_the_documented_ones() -> None:
    """``tokenhub.http.__all__`` is the API reference's member list for the HTTP seam."""
    assert sorted(_members("api.md", "tokenhub.http")) == sorted(tokenhub.http.__all__)


@pytest.mark.parametrize(
    "module", [tokenhub, tokenhub.errors, tokenhub.http, tokenhub.providers, tokenhub.routing]
)
def test_all_resolves(module: object) -> None:
    """Every name in each public module's ``__all__`` resolves (ruff keeps them sorted)."""
    names = module.__all__  # type: ignore[attr-defined]
    for name in names:
        assert getattr(module, name) is not None


def test_every_error_is_a_tokenhub_error() -> None:
    """Every exception class tokenhub defines derives from TokenhubError, the SSE decoder's too."""
    errors = [getattr(tokenhub.errors, n) for n in tokenhub.errors.__all__]
    classes = [e for e in errors if isinstance(e, type) and issubclass(e, BaseException)]
    assert all(issubclass(c, tokenhub.TokenhubError) for c in [*classes, SSEError])
    assert issubclass(tokenhub.errors.StoreBusyError, tokenhub.errors.StoreError)


def test_chat_options_are_the_documented_envelope() -> None:
    """``tokenhub.ChatOptions`` has exactly the arguments of docs/requests.md's envelope table."""
    table = (DOCS / "requests.md").read_text().split("| Argument | Type | Meaning |", 1)[1]
    documented = set(re.findall(r"^\| `(\w+)` \|", table.split("\n\n")[0], re.MULTILINE))
    assert documented - {"messages"} == set(tokenhub.ChatOptions.__optional_keys__)
