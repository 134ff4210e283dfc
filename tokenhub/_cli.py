"""The ``tokenhub`` console script: a thin layer over the vault and the store.

``tokenhub vault …`` manages credentials; ``tokenhub config export|import``,
``tokenhub logs`` and ``tokenhub usage`` read and write the store.

Secrets never come from argv: passwords come from a hidden prompt, a file
(``--password-file``) or ``TOKENHUB_VAULT_PASSWORD`` (with a warning); API keys
from a hidden prompt or stdin.

Exit codes: 0 success, 1 failure (message on stderr), 2 usage error,
3 wrong password.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tokenhub.errors import TokenhubError, VaultUnlockError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tokenhub._vault import Vault

__all__ = ["main"]

PASSWORD_ENV = "TOKENHUB_VAULT_PASSWORD"
EXIT_FAILURE, EXIT_USAGE, EXIT_PASSWORD = 1, 2, 3


class _CliError(Exception):
    """A message for stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Never echo stray arguments: they may be a key pasted onto the command line.
        if message.startswith("unrecognized arguments"):
            message = "unrecognized arguments (not shown; secrets never go on the command line)"
        super().error(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenhub", description="tokenhub's command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    vault = commands.add_parser("vault", help="manage the credential vault")
    verbs = vault.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str, *, password: bool = True) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--db", default="tokenhub.db", help="the store file (default: %(default)s)")
        if password:
            p.add_argument(
                "--password-file",
                metavar="PATH",
                help=f"read the vault password from PATH (else ${PASSWORD_ENV}, else a prompt)",
            )
        return p

    init = verb("init", "create a vault (asks for a new password twice)")
    init.add_argument("--kdf", default="moderate", choices=["moderate", "interactive"])
    put = verb("put", "seal an API key (read from a hidden prompt or stdin, never argv)")
    put.add_argument("name")
    put.add_argument("--provider", default="", help="the provider the key belongs to")
    for name, text in (("list", "list credential names"), ("status", "show the vault's state")):
        verb(name, text, password=False).add_argument("--json", action="store_true")
    verb("delete", "remove a credential").add_argument("name")
    passwd = verb("passwd", "change the password (re-wraps the data key only)")
    passwd.add_argument("--new-password-file", metavar="PATH")
    passwd.add_argument("--kdf", choices=["moderate", "interactive"])
    verb("rotate-key", "start a new data key and re-encrypt every credential")
    unlock = verb("unlock", "check the password (a CLI process cannot keep a vault unlocked)")
    unlock.add_argument("--check", action="store_true", required=True)

    def command(name: str, help_text: str, parent: Any = commands) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--db", default="tokenhub.db", help="the store file (default: %(default)s)")
        return p

    config = commands.add_parser("config", help="export or import the stored config")
    actions = config.add_subparsers(dest="verb", required=True, metavar="VERB")
    command("export", "print the stored config as JSON (keys referenced, never included)", actions)
    imp = command("import", "validate a JSON config and add it to the store", actions)
    imp.add_argument("file", help="a JSON file, or - for stdin")
    logs = command("logs", "show request-log rows, newest first")
    logs.add_argument("--since", help="e.g. 30m, 1h, 2d or an ISO date")
    logs.add_argument("--limit", type=int, default=50)
    logs.add_argument("--json", action="store_true")
    usage = command("usage", "requests, errors, tokens and cost from the request log")
    usage.add_argument("--by", default="model", choices=GROUPS)
    usage.add_argument("--since", help="e.g. 30m, 1h, 2d or an ISO date")
    usage.add_argument("--json", action="store_true")
    return parser


GROUPS = ("model", "provider", "caller", "alias", "day")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _since(value: str | None) -> float:
    if value is None:
        return 0.0
    if value[-1:] in _UNITS and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * _UNITS[value[-1]]
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _CliError(f"--since {value!r}: expected e.g. 30m, 1h, 2d or an ISO date") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    cells = [["" if r[c] is None else str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


_LOG_FIELDS = (
    "request_id",
    "model",
    "provider",
    "caller",
    "status",
    "error_class",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
)


def _store_command(args: argparse.Namespace) -> Any:
    from tokenhub._store import Store  # noqa: PLC0415

    if args.command == "config" and args.verb == "import":
        return _import(args)
    if not os.path.exists(args.db):  # noqa: PTH110
        raise _CliError(f"{args.db}: no such file")
    with Store(args.db) as store:
        if args.command == "config":
            return store.export_config()
        if args.command == "usage":
            from tokenhub._ledger import usage  # noqa: PLC0415

            rows = usage(store, since=_since(args.since), group_by=args.by)
            return rows if args.json else _table(rows)
        with store.reading() as reader:
            logged = reader.request_logs(since=_since(args.since), limit=args.limit)
        rows = [
            {
                "time": dt.datetime.fromtimestamp(r["at"], dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
                **{c: r[c] for c in _LOG_FIELDS},
            }
            for r in logged
        ]
        return rows if args.json else _table(rows)


def _import(args: argparse.Namespace) -> str:
    from tokenhub._hub import Hub  # noqa: PLC0415

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        config = json.loads(text)
    except OSError as exc:
        raise _CliError(f"cannot read {args.file}: {exc.strerror}") from None
    except ValueError as exc:
        raise _CliError(f"{args.file} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        raise _CliError(f"{args.file}: expected a JSON object")
    # Building a Hub validates exactly like from_config and imports in one transaction;
    # it opens no connection.
    hub = Hub.from_config(config, store=args.db)
    hub.store.close()
    for name, entry in (config.get("providers") or {}).items():
        if isinstance(entry, dict) and isinstance(entry.get("api_key"), str):
            print(
                f"tokenhub: warning: the literal api_key of provider {name!r} was not stored; "
                "use {'env': NAME} or {'vault': NAME}",
                file=sys.stderr,
            )
    n = sum(len(config.get(k) or {}) for k in ("providers", "models", "aliases"))
    return f"imported {n} entries into {args.db}"


def _read_file(path: str) -> bytearray:
    try:
        with open(path, "rb", buffering=0) as f:  # noqa: PTH123 - a bytearray we can zero
            data = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(data) or 0
    except OSError as exc:
        raise _CliError(f"cannot read {path}: {exc.strerror}") from None
    while n and data[n - 1] in b"\r\n":
        n -= 1
    out = data[:n]
    data[:] = bytes(len(data))
    return out


def _prompt(label: str, hint: str = f"--password-file or ${PASSWORD_ENV}") -> bytearray:
    if not sys.stdin.isatty():
        raise _CliError(f"no terminal to ask for the {label.lower()}: use {hint}", EXIT_USAGE)
    return bytearray(getpass.getpass(f"{label}: ").encode())


def _password(args: argparse.Namespace, label: str = "Vault password") -> bytearray:
    if getattr(args, "password_file", None):
        return _read_file(args.password_file)
    value = os.environ.get(PASSWORD_ENV)
    if value:
        print(
            f"tokenhub: warning: using ${PASSWORD_ENV}; environments leak (ps, /proc, crash dumps)",
            file=sys.stderr,
        )
        # os.environ decodes undecodable bytes as surrogates: give the vault the bytes as set
        return bytearray(value.encode("utf-8", "surrogateescape"))
    return _prompt(label)


def _new_password(args: argparse.Namespace, file_arg: str | None) -> bytearray:
    if file_arg:
        return _read_file(file_arg)
    if os.environ.get(PASSWORD_ENV) and args.verb == "init":
        return _password(args)
    hint = "--new-password-file" if args.verb == "passwd" else f"--password-file or ${PASSWORD_ENV}"
    first = _prompt("New vault password", hint)
    second = _prompt("Repeat the new password", hint)
    if first != second:
        raise _CliError("the passwords do not match")
    second[:] = bytes(len(second))
    return first


def _secret_input(name: str) -> str:
    if sys.stdin.isatty():
        value = getpass.getpass(f"API key for {name}: ")
    else:
        value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise _CliError("the API key is empty")
    return value


def _unlocked(vault: Vault, args: argparse.Namespace) -> None:
    vault.unlock(_password(args))


def _print(out: Any) -> None:
    if isinstance(out, str):
        if out:
            print(out)
    else:
        print(json.dumps(out, indent=2, default=str))


def _run(args: argparse.Namespace) -> int:
    if args.command != "vault":
        _print(_store_command(args))
        return 0
    from tokenhub._store import Store  # noqa: PLC0415 - sqlite-utils and PyNaCl load on use
    from tokenhub._vault import Vault  # noqa: PLC0415

    if args.verb != "init" and not os.path.exists(args.db):  # noqa: PTH110
        raise _CliError(f"{args.db}: no such file (create it with `tokenhub vault init`)")
    with Store(args.db) as store:
        vault = Vault(store)
        out: Any = None
        if args.verb == "init":
            if vault.initialized:
                raise _CliError(f"{args.db} already holds a vault")
            vault.init(_new_password(args, args.password_file), kdf=args.kdf)
            out = f"created a vault in {args.db}"
        elif args.verb == "put":
            _unlocked(vault, args)
            vault.put(args.name, _secret_input(args.name), provider=args.provider)
            out = f"stored {args.name}"
        elif args.verb == "list":
            rows = vault.names()
            out = rows if args.json else "\n".join(f"{r['name']}\t{r['provider']}" for r in rows)
        elif args.verb == "status":
            status = vault.status()
            del status["auto_lock"], status["locked"]
            out = status if args.json else "\n".join(f"{k}: {v}" for k, v in status.items())
        elif args.verb == "delete":
            _unlocked(vault, args)
            vault.delete(args.name)
            out = f"deleted {args.name}"
        elif args.verb == "passwd":
            _unlocked(vault, args)
            vault.change_password(_new_password(args, args.new_password_file), kdf=args.kdf or None)
            out = "password changed"
        elif args.verb == "rotate-key":
            _unlocked(vault, args)
            out = f"rotated to key term {vault.rotate_key()}"
        else:  # unlock --check
            _unlocked(vault, args)
            out = "password ok"
        vault.lock()
    _print(out)
    return 0


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the console script and exit with its code."""
    args = _parser().parse_args(argv)
    try:
        code = _run(args)
    except VaultUnlockError as exc:
        print(f"tokenhub: error: {exc}", file=sys.stderr)
        code = EXIT_PASSWORD
    except _CliError as exc:
        print(f"tokenhub: error: {exc}", file=sys.stderr)
        code = exc.code
    except TokenhubError as exc:
        print(f"tokenhub: error: {exc}", file=sys.stderr)
        code = EXIT_FAILURE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
