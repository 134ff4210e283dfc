"""The ``tokenhub`` console script, driven as a real subprocess (and through a pty for prompts)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CANARY, config_for
from tokenhub import Hub
from tokenhub._store import Store
from tokenhub._vault import Vault
from tokenhub.testing import FakeProvider

SCRIPT = str(Path(sys.executable).with_name("tokenhub"))
KEY = "sk-cli-canary-0f1e2d3c4b5a6978"
PASSWORD = "cli pa55word"


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "TOKENHUB_VAULT_PASSWORD"}
    return subprocess.run(
        [SCRIPT, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**environ, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.fixture
def pwfile(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text(PASSWORD + "\n")
    return str(path)


@pytest.fixture
def db(tmp_path: Path, pwfile: str) -> str:
    path = str(tmp_path / "hub.db")
    r = run("vault", "init", "--db", path, "--kdf", "interactive", "--password-file", pwfile)
    assert (0, f"created a vault in {path}\n") == (r.returncode, r.stdout)
    return path


def test_script_is_installed() -> None:
    """The console script exists (the package declares it in [project.scripts])."""
    assert Path(SCRIPT).exists()


class TestVaultCommands:
    def test_put_list_status_check(self, db: str, pwfile: str) -> None:
        """put reads the key from stdin; list/status need no password; unlock --check verifies."""
        r = run(
            "vault",
            "put",
            "openai",
            "--provider",
            "openai",
            "--db",
            db,
            "--password-file",
            pwfile,
            stdin=KEY + "\n",
        )
        assert (0, "stored openai\n") == (r.returncode, r.stdout)
        assert "openai\topenai\n" == run("vault", "list", "--db", db).stdout
        r = run("vault", "status", "--db", db, "--json")
        assert 0 == r.returncode
        assert '"credentials": 1' in r.stdout
        assert '"ops": 2' in r.stdout
        assert (
            0 == run("vault", "unlock", "--check", "--db", db, "--password-file", pwfile).returncode
        )
        with Store(db) as s:
            v = Vault(s)
            v.unlock(PASSWORD)
            assert KEY == v.get("openai").reveal()
        assert KEY.encode() not in Path(db).read_bytes()

    def test_wrong_password_exit_code(self, db: str, tmp_path: Path) -> None:
        """A wrong password exits 3 with the generic message."""
        bad = tmp_path / "bad"
        bad.write_text("nope")
        r = run("vault", "unlock", "--check", "--db", db, "--password-file", str(bad))
        assert 3 == r.returncode
        assert "tokenhub: error: invalid password or corrupted vault\n" == r.stderr
        r = run("vault", "put", "x", "--db", db, "--password-file", str(bad), stdin=KEY)
        assert 3 == r.returncode

    def test_env_password_warns(self, db: str) -> None:
        """$TOKENHUB_VAULT_PASSWORD works, with a warning on stderr."""
        r = run("vault", "unlock", "--check", "--db", db, env={"TOKENHUB_VAULT_PASSWORD": PASSWORD})
        assert 0 == r.returncode
        assert "warning: using $TOKENHUB_VAULT_PASSWORD" in r.stderr

    def test_delete_passwd_rotate(self, db: str, pwfile: str, tmp_path: Path) -> None:
        """delete, passwd (old password fails afterwards) and rotate-key."""
        for name in ("a", "b"):
            run("vault", "put", name, "--db", db, "--password-file", pwfile, stdin=f"{KEY}-{name}")
        r = run("vault", "delete", "a", "--db", db, "--password-file", pwfile)
        assert (0, "deleted a\n") == (r.returncode, r.stdout)
        r = run("vault", "delete", "a", "--db", db, "--password-file", pwfile)
        assert (1, "tokenhub: error: no credential named 'a' in the vault\n") == (
            r.returncode,
            r.stderr,
        )
        new = tmp_path / "new"
        new.write_text("n3w pa55word\n")
        r = run(
            "vault",
            "passwd",
            "--db",
            db,
            "--password-file",
            pwfile,
            "--new-password-file",
            str(new),
        )
        assert (0, "password changed\n") == (r.returncode, r.stdout)
        assert (
            3 == run("vault", "unlock", "--check", "--db", db, "--password-file", pwfile).returncode
        )
        r = run("vault", "rotate-key", "--db", db, "--password-file", str(new))
        assert (0, "rotated to key term 2\n") == (r.returncode, r.stdout)
        with Store(db) as s:
            v = Vault(s)
            v.unlock("n3w pa55word")
            assert f"{KEY}-b" == v.get("b").reveal()

    def test_usage_errors(self, db: str, pwfile: str, tmp_path: Path) -> None:
        """Usage errors exit 2 and never echo stray arguments (a pasted key)."""
        r = run("vault", "put", "openai", KEY, "--db", db, "--password-file", pwfile)
        assert 2 == r.returncode
        assert KEY not in r.stderr + r.stdout
        assert "secrets never go on the command line" in r.stderr
        assert 2 == run("vault", "frobnicate").returncode
        assert 2 == run("vault", "unlock", "--db", db).returncode  # --check is required
        # No terminal and no password source: say how to give one.
        r = run("vault", "unlock", "--check", "--db", db)
        assert 2 == r.returncode
        assert "--password-file" in r.stderr

    def test_failures(self, db: str, pwfile: str, tmp_path: Path) -> None:
        """Missing file, second init, empty key: exit 1 with a clear message."""
        r = run("vault", "list", "--db", str(tmp_path / "missing.db"))
        assert 1 == r.returncode
        assert "no such file" in r.stderr
        r = run("vault", "init", "--db", db, "--password-file", pwfile)
        assert (1, f"tokenhub: error: {db} already holds a vault\n") == (r.returncode, r.stderr)
        r = run("vault", "put", "x", "--db", db, "--password-file", pwfile, stdin="\n")
        assert (1, "tokenhub: error: the API key is empty\n") == (r.returncode, r.stderr)

    @pytest.mark.parametrize(
        ("table", "column", "verb", "message"),
        [
            ("vault_meta", "kdf_opslimit", "unlock", "the vault's parameter row is damaged: bad kdf_opslimit"),
            ("vault_meta", "vault_id", "unlock", "the vault's parameter row is damaged: bad vault_id"),
            ("vault_credentials", "provider", "rotate-key", "credential 'a' is damaged: its provider is not text"),
        ],
    )  # fmt: skip
    def test_damaged_rows_one_line(
        self, db: str, pwfile: str, table: str, column: str, verb: str, message: str
    ) -> None:
        """A NULL column in a vault row: exit 1 and one line naming the damage, no traceback."""
        run("vault", "put", "a", "--db", db, "--password-file", pwfile, stdin=KEY)
        with Store(db) as s, s.transaction() as tx:
            tx.execute(f"UPDATE {table} SET {column} = NULL")
        args = ["--check"] if verb == "unlock" else []
        r = run("vault", verb, *args, "--db", db, "--password-file", pwfile)
        assert (1, "", f"tokenhub: error: {message}\n") == (r.returncode, r.stdout, r.stderr)

    def test_password_forms(self, tmp_path: Path) -> None:
        """The CLI opens a vault whatever the password's Unicode form; a line break is refused."""
        db = str(tmp_path / "hub.db")
        with Store(db) as s:
            Vault(s).init("cafe\u0301", kdf="interactive")  # decomposed
        pw = tmp_path / "pw"
        pw.write_text("caf\u00e9\n")  # composed, as most keyboards type it
        r = run("vault", "unlock", "--check", "--db", db, "--password-file", str(pw))
        assert (0, "password ok\n") == (r.returncode, r.stdout)
        other = str(tmp_path / "other.db")
        r = run("vault", "init", "--db", other, env={"TOKENHUB_VAULT_PASSWORD": PASSWORD + "\n"})
        assert 1 == r.returncode
        assert r.stderr.endswith("tokenhub: error: a vault password cannot contain a line break "
                                 "(CR or LF): `tokenhub` reads one line and drops a trailing "
                                 "line break\n")  # fmt: skip
        assert PASSWORD not in r.stderr
        r = run("vault", "init", "--db", other, env={"TOKENHUB_VAULT_PASSWORD": "pw\udcff"})
        assert 0 == r.returncode  # a byte that is not UTF-8 in the environment: used as set
        with Store(other) as s:
            Vault(s).unlock(b"pw\xff")

    def test_python_dash_m(self, db: str) -> None:
        """python -m tokenhub is the same program."""
        r = subprocess.run(
            [sys.executable, "-m", "tokenhub", "vault", "list", "--db", db],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (0, "") == (r.returncode, r.stdout)


def converse(args: list[str], answers: list[str]) -> tuple[int, str]:
    """Run the script on a pty, answering each prompt in turn; return (exit code, transcript)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.pop("TOKENHUB_VAULT_PASSWORD", None)
        os.execv(SCRIPT, [SCRIPT, *args])
    transcript = b""
    mark = 0  # where the output after the last answer starts
    pending = list(answers)
    while True:
        try:
            data = os.read(fd, 1024)
        except OSError:
            break
        if not data:
            break
        transcript += data
        if pending and transcript[mark:].rstrip().endswith(b":"):
            os.write(fd, pending.pop(0).encode() + b"\n")
            mark = len(transcript)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), transcript.decode()


class TestPrompts:
    def test_init_and_put_on_a_terminal(self, tmp_path: Path) -> None:
        """init asks twice, put asks for password and key; nothing typed is echoed."""
        db = str(tmp_path / "tty.db")
        code, out = converse(
            ["vault", "init", "--db", db, "--kdf", "interactive"], [PASSWORD, PASSWORD]
        )
        assert 0 == code, out
        assert "New vault password:" in out
        assert "Repeat the new password:" in out
        assert PASSWORD not in out
        code, out = converse(["vault", "put", "openai", "--db", db], [PASSWORD, KEY])
        assert 0 == code, out
        assert "API key for openai:" in out
        assert KEY not in out
        assert PASSWORD not in out
        code, out = converse(["vault", "init", "--db", str(tmp_path / "x.db")], ["a", "b"])
        assert 1 == code
        assert "the passwords do not match" in out

    @pytest.mark.anyio
    async def test_hub_uses_a_cli_made_vault(self, tmp_path: Path, fake: FakeProvider) -> None:
        """A key stored with the CLI is sent by a Hub whose config names it."""
        db = str(tmp_path / "hub.db")
        pw = tmp_path / "pw"
        pw.write_text(PASSWORD)
        run("vault", "init", "--db", db, "--kdf", "interactive", "--password-file", str(pw))
        run("vault", "put", "openai", "--db", db, "--password-file", str(pw), stdin=KEY)
        cfg = config_for(fake)
        cfg["providers"]["openai"]["api_key"] = {"vault": "openai"}
        cfg["vault"] = {"password": {"file": str(pw)}}
        async with Hub.from_config(cfg, store=db) as hub:
            await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
        assert f"Bearer {KEY}" == fake.requests[-1].headers["authorization"]


class TestStoreCommands:
    @pytest.mark.anyio
    async def test_config_import_export_logs_usage(
        self, tmp_path: Path, fake: FakeProvider
    ) -> None:
        """config import validates and stores; export prints it; logs and usage read the log."""
        db = str(tmp_path / "hub.db")
        cfg = config_for(fake)
        src = tmp_path / "hub.json"
        src.write_text(json.dumps(cfg))
        r = run("config", "import", str(src), "--db", db)
        assert (0, "imported 6 entries into " + db + "\n") == (r.returncode, r.stdout)
        assert "literal api_key of provider 'openai' was not stored" in r.stderr
        assert CANARY not in r.stdout + r.stderr
        r = run("config", "export", "--db", db)
        exported = json.loads(r.stdout)
        assert list(cfg["models"]) == list(exported["models"])
        assert "api_key" not in exported["providers"]["openai"]
        r = run("config", "import", "-", "--db", str(tmp_path / "b.db"), stdin=r.stdout)
        assert 0 == r.returncode
        assert exported == json.loads(
            run("config", "export", "--db", str(tmp_path / "b.db")).stdout
        )

        cfg["store"] = {"path": db, "logs": {"enabled": True}}
        async with Hub.from_config(cfg) as hub:
            await hub.chat(
                [{"role": "user", "content": "hi"}], model="gpt-4o-mini", request_id="req-1"
            )
            await hub.chat(
                [{"role": "user", "content": "hi"}], model="claude-haiku", request_id="req-2"
            )
        r = run("logs", "--db", db, "--since", "1h")
        lines = r.stdout.splitlines()
        assert lines[0].startswith("time")
        assert ["req-2", "req-1"] == [line.split()[2] for line in lines[1:]]
        rows = json.loads(run("logs", "--db", db, "--json", "--limit", "1").stdout)
        assert ["req-2"] == [row["request_id"] for row in rows]
        usage = json.loads(run("usage", "--db", db, "--by", "provider", "--json").stdout)
        assert {"anthropic": 1, "openai": 1} == {u["provider"]: u["requests"] for u in usage}
        assert "" == run("usage", "--db", db, "--since", "2999-01-01").stdout

    def test_store_command_errors(self, tmp_path: Path) -> None:
        """Bad JSON, an invalid config, a bad --since and a missing file exit 1 with a message."""
        bad = tmp_path / "bad.json"
        bad.write_text("{not json")
        r = run("config", "import", str(bad), "--db", str(tmp_path / "x.db"))
        assert (1, True) == (r.returncode, "is not JSON" in r.stderr)
        bad.write_text(json.dumps({"models": {"m": {"provider": "nowhere"}}}))
        r = run("config", "import", str(bad), "--db", str(tmp_path / "x.db"))
        assert 1 == r.returncode
        assert "models.m.provider: unknown provider 'nowhere'" in r.stderr
        r = run("logs", "--db", str(tmp_path / "x.db"), "--since", "yesterday")
        assert (1, True) == (r.returncode, "--since 'yesterday'" in r.stderr)
        r = run("usage", "--db", str(tmp_path / "missing.db"))
        assert (1, True) == (r.returncode, "no such file" in r.stderr)
