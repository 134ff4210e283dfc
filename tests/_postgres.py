"""A real PostgreSQL for the tests: the binaries of the ``pgserver`` wheel, on a loopback port.

One server per test session, started on first use (:func:`server`) in a temporary
directory and removed at the end of the session (``tests/conftest.py`` stops it). As
root (CI), ``initdb`` and ``postgres`` run as ``nobody``: PostgreSQL refuses to run
as root. Host connections need the password (SCRAM), so tests run with a real one,
:data:`PASSWORD`, a canary that must never appear in a message or a log.
Each test gets a database of its own (:meth:`Server.fresh_database`).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: The server's password for the ``tokenhub`` role: a canary (tests search messages for it).
PASSWORD = "pg-canary-Q7w2Lx9vR4"
USER = "tokenhub"
_START_TIMEOUT = 20.0


def available() -> bool:
    """Whether the PostgreSQL test server can be used (pgserver and psycopg installed)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return False
    return importlib.util.find_spec("pgserver") is not None


def _bin_dir() -> Path:
    # Found, not imported: importing pgserver warns (platformdirs) and tests treat warnings as errors.
    spec = importlib.util.find_spec("pgserver")
    assert spec is not None
    assert spec.origin is not None
    return Path(spec.origin).resolve().parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _world_usable(path: Path) -> bool:
    """Whether an unprivileged user can reach and run ``path`` (every parent searchable)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


class Server:
    """One running PostgreSQL: :attr:`port`, :meth:`url`, :meth:`fresh_database`, :meth:`stop`."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tokenhub-pg-"))
        self._names = itertools.count(1)
        self._lock = threading.Lock()
        self.user: dict[str, Any] = {}
        bin_dir = _bin_dir()
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self.user = {"user": nobody.pw_uid, "group": nobody.pw_gid}
            self.root.chmod(0o755)
            if not _world_usable(bin_dir / "postgres"):  # a private checkout: copy the binaries
                shutil.copytree(bin_dir.parent, self.root / "pginstall", symlinks=True)
                bin_dir = self.root / "pginstall" / "bin"
        self.bin = bin_dir
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.sockets.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD)
        if self.user:
            for p in (self.root, self.sockets, pwfile):
                os.chown(p, self.user["user"], self.user["group"])
        subprocess.run(
            [
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            **self.user,
        )
        pwfile.unlink()
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Run the server (again, after :meth:`halt`: same port, same data)."""
        with (self.root / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.sockets),
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=32MB",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                **self.user,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.url("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                    log = (self.root / "server.log").read_text(errors="replace")
                    self.stop()
                    raise RuntimeError(f"the test PostgreSQL did not start:\n{log}") from None
                time.sleep(0.02)

    def url(self, database: str, *, password: str = PASSWORD) -> str:
        """A connection URL for ``database`` (with the password)."""
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def fresh_database(self) -> str:
        """Create an empty database (a copy of ``template1``) and return its URL."""
        import psycopg

        with self._lock:
            name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def halt(self) -> None:
        """Shut the server down (fast: connections are cut), keeping its data for :meth:`start`."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its directory."""
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


_server: Server | None = None
_server_lock = threading.Lock()


def server() -> Server:
    """The session's server, started on first use."""
    global _server  # noqa: PLW0603 - one server per test session
    with _server_lock:
        if _server is None:
            _server = Server()
        return _server


def stop() -> None:
    """Stop the session's server if one was started."""
    global _server  # noqa: PLW0603
    with _server_lock:
        if _server is not None:
            _server.stop()
            _server = None
