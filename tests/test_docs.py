"""The Python blocks of README.md and docs/*.md run offline, against the fake provider.

A page runs like a notebook: its blocks in order, in one namespace, in a fresh working directory,
with a `FakeProvider` answering at the default OpenAI and Anthropic URLs. The markers that skip a
block, run it as a pytest module or add hidden code are described at the end of docs/testing.md
("The examples on these pages are tested").
"""

from __future__ import annotations

import ast
import inspect
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from tokenhub import Hub, SyncHub
from tokenhub.providers.anthropic import AnthropicProvider
from tokenhub.providers.openai import OpenAIProvider
from tokenhub.testing import FakeProvider, insecure_vault_kdf

ROOT = Path(__file__).parent.parent
PAGES = ["README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"(?P<indent> *)(?P<fence>```+)(?P<info>.*)")
PYTHON = re.compile(r" *```+python\b.*")
MARKER = re.compile(r" *<!-- test: (?P<kind>skip|pytest)(?: \((?P<note>.+)\))? -->")
HIDDEN = re.compile(r"<!-- test: hidden(?: \(.+\))?")
TITLE = re.compile(r'\btitle="(?P<name>[^"]+)"')


@attrs.frozen
class Block:
    """A Python block of a page: ``kind`` is run, hidden, file, pytest or skip."""

    page: str
    line: int  # of the opening fence or comment, 1-based
    kind: str
    code: str
    note: str = ""  # why it is skipped, or the file it is written to

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def parse(page: str, text: str) -> list[Block]:
    """Return the Python blocks of a Markdown page, hidden ones included, in page order."""
    lines = text.splitlines()
    blocks: list[Block] = []
    marker: re.Match[str] | None = None
    i = 0
    while i < len(lines):
        line, where = lines[i], f"{page}:{i + 1}"
        fence = FENCE.fullmatch(line)
        if HIDDEN.fullmatch(line):
            end = lines.index("-->", i)
            blocks.append(Block(page, i + 1, "hidden", "\n".join(lines[i + 1 : end])))
            i = end
        elif m := MARKER.fullmatch(line):
            if marker is not None or (m["kind"] == "skip") != bool(m["note"]):
                raise ValueError(f"{where}: a marker takes one block; skip needs a (reason)")
            marker = m
        elif line.lstrip().startswith("<!-- test:"):
            raise ValueError(f"{where}: unknown marker {line.strip()!r}")
        elif fence is not None:
            indent, close = len(fence["indent"]), fence["indent"] + fence["fence"]
            end = lines.index(close, i + 1)
            if PYTHON.fullmatch(line):
                code = "\n".join(body[indent:] for body in lines[i + 1 : end])
                title = TITLE.search(fence["info"])
                if marker is not None:
                    blocks.append(Block(page, i + 1, marker["kind"], code, marker["note"] or ""))
                elif title is not None:
                    blocks.append(Block(page, i + 1, "file", code, title["name"]))
                else:
                    blocks.append(Block(page, i + 1, "run", code))
                marker = None
            i = end
        if marker is not None and line.strip() and not MARKER.fullmatch(line):
            raise ValueError(f"{where}: a marker must come right before a python block")
        i += 1
    return blocks


BLOCKS = {page: parse(page, (ROOT / page).read_text(encoding="utf-8")) for page in PAGES}


class Page:
    """What one page's blocks share: a namespace, an event loop and a working directory."""

    def __init__(self, blocks: list[Block], portal: BlockingPortal, tmp: Path) -> None:
        self.blocks, self.portal, self.tmp = blocks, portal, tmp
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.done = 0
        self.failed: Block | None = None

    def run_to(self, block: Block) -> None:
        """Run the blocks not run yet up to ``block``: a filter (-k) may have skipped some."""
        if self.failed is not None:
            pytest.skip(f"not run: {self.failed} failed")
        while self.done <= self.blocks.index(block):
            current = self.blocks[self.done]
            self.done += 1
            try:
                self.run(current)
            except BaseException:
                self.failed = current
                raise

    def run(self, block: Block) -> None:
        """Run one block in the page's namespace, or write its file."""
        if block.kind == "file":
            (self.tmp / block.note).write_text(block.code + "\n", encoding="utf-8")
        elif block.kind == "pytest":
            module = self.tmp / f"test_{Path(block.page).stem}_{block.line}.py"
            module.write_text(block.code + "\n", encoding="utf-8")
            # Only the anyio plugin, which the pages' examples name: others cost seconds to load.
            args = [sys.executable, "-m", "pytest", "-q", "-W", "error", "-p", "anyio"]
            out = subprocess.run(
                [*args, "-p", "no:cacheprovider", module.name],
                cwd=self.tmp,
                env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert out.returncode == 0, out.stdout + out.stderr
        elif block.kind in {"run", "hidden"}:
            flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            code = compile(block.code, ROOT / block.page, "exec", flags=flags, dont_inherit=True)
            code = moved(code, block.line)  # tracebacks show the page's own lines
            if code.co_flags & inspect.CO_COROUTINE:
                self.portal.call(types.FunctionType(code, self.namespace))
            else:
                exec(code, self.namespace)  # noqa: S102 - running the docs is the point

    def close(self) -> None:
        """Close the Hubs the page left open, and forget the modules it wrote."""
        for value in self.namespace.values():
            if isinstance(value, Hub):
                self.portal.call(value.aclose)
            elif isinstance(value, SyncHub):
                value.close()
        for block in self.blocks:
            if block.kind == "file":
                sys.modules.pop(Path(block.note).stem, None)


def moved(code: types.CodeType, lines: int) -> types.CodeType:
    """Return ``code`` moved ``lines`` lines down, with the functions it defines."""
    consts = tuple(moved(c, lines) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_firstlineno=code.co_firstlineno + lines, co_consts=consts)


@contextmanager
def logger_levels_kept() -> Iterator[None]:
    """Restore the levels of the loggers that exist now (a page may quieten httpx)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    levels = {lg: lg.level for lg in loggers if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        for lg, level in levels.items():
            lg.setLevel(level)


@pytest.fixture(scope="module")
def page(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Page]:
    name: str = request.param
    tmp = tmp_path_factory.mktemp(Path(name).stem)
    with ExitStack() as stack:
        mp = stack.enter_context(pytest.MonkeyPatch.context())
        stack.enter_context(logger_levels_kept())
        stack.enter_context(insecure_vault_kdf())
        portal = stack.enter_context(start_blocking_portal())
        fake = stack.enter_context(portal.wrap_async_context_manager(FakeProvider()))
        mp.setattr(OpenAIProvider, "default_base_url", fake.openai_base_url)
        mp.setattr(AnthropicProvider, "default_base_url", fake.anthropic_base_url)
        mp.setenv("OPENAI_API_KEY", "sk-docs-test")
        mp.setenv("ANTHROPIC_API_KEY", "sk-ant-docs-test")
        mp.chdir(tmp)
        mp.syspath_prepend(str(tmp))
        state = Page(BLOCKS[name], portal, tmp)
        state.namespace["docs_fake"] = fake
        stack.callback(state.close)
        yield state


@pytest.mark.parametrize(
    ("page", "block"),
    [pytest.param(b.page, b, id=str(b)) for blocks in BLOCKS.values() for b in blocks],
    indirect=["page"],
    scope="module",  # one Page for all the blocks of a page
)
def test_block_runs(page: Page, block: Block) -> None:
    """The block runs without error after the blocks above it on its page."""
    if block.kind == "skip":
        pytest.skip(block.note)
    page.run_to(block)


@pytest.mark.parametrize("name", PAGES)
def test_every_python_fence_is_collected(name: str) -> None:
    """Every ```python fence of the page becomes one block, so none is silently left out."""
    fences = [
        n
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1)
        if PYTHON.fullmatch(line)
    ]

    assert fences == [b.line for b in BLOCKS[name] if b.kind != "hidden"]


class TestParse:
    def test_markers_and_hidden_code(self) -> None:
        """A marker applies to the next block; hidden code is a block of its own."""
        text = """\
<!-- test: skip (needs a real key) -->

```python
a = 1
```
<!-- test: hidden
b = 2
-->
```python title="m.py"
c = 3
```
- item

    ```python
    d = 4
    ```
"""

        assert [
            Block("p.md", 3, "skip", "a = 1", "needs a real key"),
            Block("p.md", 6, "hidden", "b = 2"),
            Block("p.md", 9, "file", "c = 3", "m.py"),
            Block("p.md", 14, "run", "d = 4"),
        ] == parse("p.md", text)

    @pytest.mark.parametrize(
        "text",
        [
            "<!-- test: skip -->\n```python\nx\n```",
            "<!-- test: skipped (why) -->\n```python\nx\n```",
            "<!-- test: pytest -->\nprose\n```python\nx\n```",
        ],
    )
    def test_bad_marker(self, text: str) -> None:
        """A skip without a reason, an unknown marker or a marker away from its block is an error."""
        with pytest.raises(ValueError, match=r"p\.md:\d"):
            parse("p.md", text)
