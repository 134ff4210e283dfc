"""The vault against a second writer: another Vault, another process, a rotation during unlock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CANARY, config_for
from tests.test_cli import run
from tokenhub import Hub
from tokenhub import _vault as vault_module
from tokenhub._crypto import KdfParams, Key
from tokenhub._store import Store
from tokenhub._vault import CHANGED, UNLOCK_ATTEMPTS, Vault
from tokenhub.errors import VaultError, VaultLockedError, VaultUnlockError
from tokenhub.testing import FakeProvider, insecure_vault_kdf

PASSWORD = "race pa55word"
NEW = "a new race pa55word"
OTHER = "sk-ant-race-canary-9a8b7c6d5e4f3021"


@pytest.fixture(autouse=True)
def cheap_kdf() -> Iterator[None]:
    with insecure_vault_kdf():
        yield


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A store file holding a vault with two credentials."""
    p = tmp_path / "hub.db"
    with Store(p) as store:
        v = Vault(store)
        v.init(PASSWORD)
        v.put("openai", CANARY, provider="openai")
        v.put("anthropic", OTHER, provider="anthropic")
        v.lock()
    return p


@pytest.fixture
def opened(path: Path) -> Iterator[Callable[[str], Vault]]:
    """Open Vault objects on their own handles of the file (what a second process does)."""
    stores: list[Store] = []

    def open_vault(password: str = PASSWORD) -> Vault:
        store = Store(path)
        stores.append(store)
        v = Vault(store)
        v.unlock(password)
        return v

    yield open_vault
    for store in stores:
        store.close()


def readable(path: Path, password: str, *names: str) -> dict[str, str]:
    """What a fresh process unlocking with ``password`` reads."""
    with Store(path) as store:
        v = Vault(store)
        v.unlock(password)
        try:
            return {n: v.get(n).reveal() for n in names}
        finally:
            v.lock()


def term(path: Path) -> int:
    with Store(path) as store:
        return int(Vault(store).status()["term"])


def no_secret(exc: BaseException) -> None:
    text = f"{exc!s} {exc!r}"
    for secret in (PASSWORD, NEW, CANARY, OTHER):
        assert secret not in text


class TestAnotherWriter:
    def test_get_after_rotation_elsewhere(self, opened: Callable[[str], Vault]) -> None:
        """A service's get reads a credential re-encrypted by another process's rotation."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        assert cli.rotate_key() == 2
        assert service.get("openai").reveal() == CANARY
        assert service.get("anthropic").reveal() == OTHER

    def test_put_after_rotation_elsewhere(self, path: Path, opened: Callable[[str], Vault]) -> None:
        """A service's put after another process rotated is sealed under the new term."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.rotate_key()
        service.put("new", "sk-new-race-1234", provider="p")
        assert cli.get("new").reveal() == "sk-new-race-1234"
        assert readable(path, PASSWORD, "new", "openai") == {
            "new": "sk-new-race-1234",
            "openai": CANARY,
        }

    def test_rotate_after_rotation_elsewhere(
        self, path: Path, opened: Callable[[str], Vault]
    ) -> None:
        """A rotation follows one committed elsewhere: the next term, every credential readable."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        assert cli.rotate_key() == 2
        assert service.rotate_key() == 3
        assert cli.get("openai").reveal() == CANARY
        assert readable(path, PASSWORD, "openai", "anthropic")["anthropic"] == OTHER

    def test_rotate_after_passwd_elsewhere(
        self, path: Path, opened: Callable[[str], Vault]
    ) -> None:
        """A rotation after a password change elsewhere locks with a clear error, writing nothing."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.change_password(NEW)
        with pytest.raises(VaultLockedError, match="unlock again") as caught:
            service.rotate_key()
        assert str(caught.value) == CHANGED
        no_secret(caught.value)
        assert service.locked
        assert term(path) == 1
        assert readable(path, NEW, "openai", "anthropic") == {"openai": CANARY, "anthropic": OTHER}
        with pytest.raises(VaultUnlockError):
            readable(path, PASSWORD)

    def test_passwd_after_rotation_elsewhere(
        self, path: Path, opened: Callable[[str], Vault]
    ) -> None:
        """A password change after a rotation elsewhere re-wraps the new term's key."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.rotate_key()
        service.change_password(NEW)
        assert service.get("openai").reveal() == CANARY
        assert readable(path, NEW, "openai", "anthropic") == {"openai": CANARY, "anthropic": OTHER}
        assert cli.get("anthropic").reveal() == OTHER  # the data key did not change

    def test_reads_and_writes_after_passwd_elsewhere(
        self, path: Path, opened: Callable[[str], Vault]
    ) -> None:
        """After a password change elsewhere the data key is the same: get, put and delete work."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.change_password(NEW)
        assert service.get("openai").reveal() == CANARY
        service.put("new", "sk-new-race-5678")
        service.delete("anthropic")
        assert readable(path, NEW, "new") == {"new": "sk-new-race-5678"}

    def test_passwd_after_passwd_elsewhere(
        self, path: Path, opened: Callable[[str], Vault]
    ) -> None:
        """Two password changes: the last one wins and every credential stays readable."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.change_password(NEW)
        service.change_password("third pa55word")
        assert readable(path, "third pa55word", "openai") == {"openai": CANARY}
        with pytest.raises(VaultUnlockError):
            readable(path, NEW)

    @pytest.mark.parametrize("op", ["get", "put", "delete", "passwd"])
    def test_rotation_and_passwd_elsewhere_lock(
        self, path: Path, opened: Callable[[str], Vault], op: str
    ) -> None:
        """After a rotation under a new password elsewhere, the stale vault locks and says why."""
        service, cli = opened(PASSWORD), opened(PASSWORD)
        cli.change_password(NEW)
        cli.rotate_key()
        calls: dict[str, Callable[[], Any]] = {
            "get": lambda: service.get("openai"),
            "put": lambda: service.put("new", "sk-new-race-9999"),
            "delete": lambda: service.delete("anthropic"),
            "passwd": lambda: service.change_password("third pa55word"),
        }
        with pytest.raises(VaultLockedError) as caught:
            calls[op]()
        assert str(caught.value) == CHANGED
        no_secret(caught.value)
        assert service.locked
        assert readable(path, NEW, "openai", "anthropic") == {"openai": CANARY, "anthropic": OTHER}

    def test_vault_replaced_elsewhere(self, path: Path, opened: Callable[[str], Vault]) -> None:
        """A vault replaced under a service (rows deleted, a new init) locks it; keys never mix."""
        service = opened(PASSWORD)
        with Store(path) as store:
            with store.transaction() as tx:
                for table in ("vault_meta", "vault_keys", "vault_credentials"):
                    tx.execute(f"DELETE FROM {table}")
            Vault(store).init(PASSWORD)
        with pytest.raises(VaultLockedError, match="another vault"):
            service.put("new", "sk-new-race-0000")
        assert service.locked
        assert readable(path, PASSWORD) == {}


class TestTheCommandLine:
    @pytest.fixture
    def pwfiles(self, tmp_path: Path) -> tuple[str, str]:
        old, new = tmp_path / "old", tmp_path / "new"
        old.write_text(PASSWORD + "\n")
        new.write_text(NEW + "\n")
        return str(old), str(new)

    def test_cli_rotate_under_a_service(
        self, path: Path, opened: Callable[[str], Vault], pwfiles: tuple[str, str]
    ) -> None:
        """`tokenhub vault rotate-key` in another process: the service reads and writes on."""
        service = opened(PASSWORD)
        r = run("vault", "rotate-key", "--db", str(path), "--password-file", pwfiles[0])
        assert (r.returncode, r.stdout) == (0, "rotated to key term 2\n")
        assert service.get("openai").reveal() == CANARY
        service.put("new", "sk-new-race-4321")
        assert readable(path, PASSWORD, "new") == {"new": "sk-new-race-4321"}
        r = run("vault", "rotate-key", "--db", str(path), "--password-file", pwfiles[0])
        assert (r.returncode, r.stdout) == (0, "rotated to key term 3\n")
        assert readable(path, PASSWORD, "new", "openai")["openai"] == CANARY

    def test_cli_passwd_under_a_service(
        self, path: Path, opened: Callable[[str], Vault], pwfiles: tuple[str, str]
    ) -> None:
        """`tokenhub vault passwd` in another process, then a service rotation: one clear error."""
        service = opened(PASSWORD)
        old, new = pwfiles
        r = run("vault", "passwd", "--db", str(path), "--password-file", old,
                "--new-password-file", new)  # fmt: skip
        assert (r.returncode, r.stdout) == (0, "password changed\n")
        with pytest.raises(VaultLockedError, match="unlock again"):
            service.rotate_key()
        r = run("vault", "unlock", "--check", "--db", str(path), "--password-file", new)
        assert (r.returncode, r.stdout) == (0, "password ok\n")
        assert readable(path, NEW, "openai") == {"openai": CANARY}

    @pytest.mark.anyio
    async def test_hub_requests_after_cli_rotation(
        self, path: Path, pwfiles: tuple[str, str], fake: FakeProvider, http_impl: str
    ) -> None:
        """A Hub's requests keep sending the vault key after `tokenhub vault rotate-key` elsewhere."""
        cfg = config_for(fake, http_impl)
        cfg["providers"]["openai"]["api_key"] = {"vault": "openai"}
        cfg["store"] = {"path": str(path)}
        messages = [{"role": "user", "content": "hi"}]
        async with Hub.from_config(cfg) as hub:
            hub.vault.unlock(PASSWORD)
            await hub.chat(messages, model="gpt-4o-mini")
            r = run("vault", "rotate-key", "--db", str(path), "--password-file", pwfiles[0])
            assert r.returncode == 0
            await hub.chat(messages, model="gpt-4o-mini")
            assert [q.headers["authorization"] for q in fake.requests] == [f"Bearer {CANARY}"] * 2

    def test_service_rotate_under_the_cli(
        self, path: Path, opened: Callable[[str], Vault], pwfiles: tuple[str, str]
    ) -> None:
        """A service rotation, then `tokenhub vault passwd` and `rotate-key`: all stays readable."""
        service = opened(PASSWORD)
        service.rotate_key()
        old, new = pwfiles
        r = run("vault", "passwd", "--db", str(path), "--password-file", old,
                "--new-password-file", new)  # fmt: skip
        assert r.returncode == 0
        r = run("vault", "rotate-key", "--db", str(path), "--password-file", new)
        assert (r.returncode, r.stdout) == (0, "rotated to key term 3\n")
        assert readable(path, NEW, "openai", "anthropic") == {"openai": CANARY, "anthropic": OTHER}


class TestUnlockRaces:
    @staticmethod
    def hook(monkeypatch: pytest.MonkeyPatch, during: Callable[[], object], times: int = 1) -> None:
        """Run ``during`` inside the next ``times`` key derivations (after unlock read the row)."""
        real: Callable[[bytearray, bytes, KdfParams], Key] = getattr(vault_module, "derive")  # noqa: B009
        left = [times]
        busy = threading.Lock()  # derivations made by ``during`` itself pass straight through

        def derive(password: bytearray, salt: bytes, params: KdfParams) -> Key:
            if left[0] > 0 and busy.acquire(blocking=False):
                try:
                    left[0] -= 1
                    during()
                finally:
                    busy.release()
            return real(password, salt, params)

        monkeypatch.setattr(vault_module, "derive", derive)

    def test_rotation_in_another_thread_during_unlock(
        self, path: Path, opened: Callable[[str], Vault], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rotation by another thread while unlock derives is kept, not undone in memory."""
        v = opened(PASSWORD)
        terms: list[int] = []

        def rotate() -> None:
            worker = threading.Thread(target=lambda: terms.append(v.rotate_key()))
            worker.start()
            worker.join(timeout=30)
            assert not worker.is_alive()

        self.hook(monkeypatch, rotate)
        v.unlock(PASSWORD)
        assert terms == [2]
        assert v.status()["term"] == 2
        assert v.get("openai").reveal() == CANARY
        v.put("new", "sk-new-race-2468")
        assert v.rotate_key() == 3
        assert readable(path, PASSWORD, "new", "anthropic") == {
            "new": "sk-new-race-2468",
            "anthropic": OTHER,
        }

    def test_rotation_elsewhere_during_unlock(
        self, path: Path, opened: Callable[[str], Vault], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A first unlock while another process rotates installs the rotated term."""
        other = opened(PASSWORD)
        with Store(path) as store:
            v = Vault(store)
            self.hook(monkeypatch, other.rotate_key)
            v.unlock(PASSWORD)
            assert v.get("anthropic").reveal() == OTHER
            v.put("new", "sk-new-race-1357")
            assert other.get("new").reveal() == "sk-new-race-1357"

    def test_passwd_elsewhere_during_unlock(
        self, path: Path, opened: Callable[[str], Vault], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The old password no longer opens once another process changed it while unlock derived."""
        other = opened(PASSWORD)
        with Store(path) as store:
            v = Vault(store)
            self.hook(monkeypatch, lambda: other.change_password(NEW))
            with pytest.raises(VaultUnlockError):
                v.unlock(PASSWORD)
            assert v.locked
            v.unlock(NEW)
            assert v.get("openai").reveal() == CANARY

    def test_unlock_derives_again_a_bounded_number_of_times(
        self, path: Path, opened: Callable[[str], Vault], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A password re-set during every derivation makes unlock give up with one clear error."""
        other = opened(PASSWORD)
        with Store(path) as store:
            v = Vault(store)
            self.hook(monkeypatch, lambda: other.change_password(PASSWORD), UNLOCK_ATTEMPTS)
            with pytest.raises(VaultError, match="kept changing") as caught:
                v.unlock(PASSWORD)
            no_secret(caught.value)
            assert v.locked
            self.hook(monkeypatch, lambda: other.change_password(PASSWORD), UNLOCK_ATTEMPTS - 1)
            v.unlock(PASSWORD)
            assert v.get("openai").reveal() == CANARY
