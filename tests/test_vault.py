"""The credential vault: key hierarchy, verification, tampering, lock, rotation, storage."""

from __future__ import annotations

import contextlib
import pickle
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.bindings
import nacl.exceptions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import config_for
from tokenhub import Hub, Secret
from tokenhub import _crypto as crypto
from tokenhub import _vault as vault_module
from tokenhub._store import Store
from tokenhub._vault import CHEAPEST, PROFILES, KdfParams, Vault
from tokenhub.errors import (
    ConfigError,
    CredentialError,
    StoreError,
    VaultCorruptedError,
    VaultError,
    VaultLockedError,
    VaultUnlockError,
)
from tokenhub.testing import FakeClock, FakeProvider, insecure_vault_kdf

KEY = "sk-vault-canary-5d0c9e1b7a3f2468"
OTHER = "sk-ant-vault-canary-e4b1c7a9d2f05836"
PASSWORD = "correct horse battery staple"
GOLDEN = Path(__file__).parent / "data" / "store-v1.db"


@pytest.fixture(autouse=True)
def cheap_kdf() -> Iterator[None]:
    with insecure_vault_kdf():
        yield


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "hub.db")
    yield s
    s.close()


@pytest.fixture
def vault(store: Store) -> Vault:
    v = Vault(store)
    v.init(PASSWORD)
    v.put("openai", KEY, provider="openai")
    v.put("anthropic", OTHER, provider="anthropic")
    return v


@pytest.fixture(params=["cffi", "public"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both key-material paths: cffi buffers (private PyNaCl API) and the public fallback."""
    if request.param == "public":
        monkeypatch.setattr(crypto, "_lib", None)
        monkeypatch.setattr(crypto, "_ffi", None)
    return str(request.param)


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def file_bytes(path: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()
    )


class TestKnownAnswers:
    def test_rfc9106_argon2id_vector(self) -> None:
        """argon2-cffi reproduces RFC 9106 §5.3, so it can vouch for libsodium below."""
        from _argon2_cffi_bindings import ffi, lib  # type: ignore[import-untyped]

        buffers = {
            "pwd": ffi.new("uint8_t[]", b"\x01" * 32),
            "salt": ffi.new("uint8_t[]", b"\x02" * 16),
            "secret": ffi.new("uint8_t[]", b"\x03" * 8),
            "ad": ffi.new("uint8_t[]", b"\x04" * 12),
        }
        out = ffi.new("uint8_t[]", 32)
        ctx = ffi.new(
            "argon2_context *",
            {
                "out": out,
                "outlen": 32,
                "pwd": buffers["pwd"],
                "pwdlen": 32,
                "salt": buffers["salt"],
                "saltlen": 16,
                "secret": buffers["secret"],
                "secretlen": 8,
                "ad": buffers["ad"],
                "adlen": 12,
                "t_cost": 3,
                "m_cost": 32,
                "lanes": 4,
                "threads": 4,
                "version": 0x13,
                "allocate_cbk": ffi.NULL,
                "free_cbk": ffi.NULL,
                "flags": lib.ARGON2_DEFAULT_FLAGS,
            },
        )
        assert 0 == lib.argon2_ctx(ctx, lib.Argon2_id)
        expected = "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        assert expected == bytes(ffi.buffer(out, 32)).hex()

    @pytest.mark.parametrize("params", [KdfParams(2, 8 * crypto.MIB), KdfParams(3, 65536)])
    def test_derivation_matches_argon2_cffi(self, backend: str, params: KdfParams) -> None:
        """The vault's Argon2id (libsodium, one lane) equals argon2-cffi's with p=1."""
        from argon2.low_level import Type, hash_secret_raw

        password, salt = bytearray(b"pa55word"), b"s" * 16
        key = crypto.derive(password, salt, params)
        expected = hash_secret_raw(
            b"pa55word", salt, params.ops, params.mem // 1024, 1, 32, Type.ID
        )
        assert expected == bytes(key.buf)

    def test_xchacha20poly1305_vector(self, backend: str) -> None:
        """draft-irtf-cfrg-xchacha A.3.1: the cipher the vault seals with."""
        key, nonce = bytes(range(0x80, 0xA0)), bytes(range(0x40, 0x58))
        aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
        plain = (
            b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
            b"for the future, sunscreen would be it."
        )
        ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, key)
        assert ct.startswith(bytes.fromhex("bd6d179d3e83d43b"))
        assert ct.endswith(bytes.fromhex("c0875924c1c7987947deafd8780acf49"))
        k = crypto.Key()
        k.buf[0:32] = key
        assert plain == crypto.unseal(k, nonce, ct, aad)
        with pytest.raises(nacl.exceptions.CryptoError):
            crypto.unseal(k, nonce, flip(ct), aad)


class TestRoundTrip:
    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(value=st.text() | st.sampled_from(["", "é" * 32768]))
    def test_any_value(self, vault: Vault, value: str) -> None:
        """Any str, empty or 64 KiB, comes back exactly and as a masked Secret."""
        vault.put("x", value)
        got = vault.get("x")
        assert isinstance(got, Secret)
        assert value == got.reveal()
        assert "**********" == str(got)

    def test_both_backends(self, backend: str, store: Store) -> None:
        """Init, seal, lock, unlock and open work on the cffi and the public paths."""
        v = Vault(store)
        v.init(PASSWORD)
        v.put("openai", KEY)
        v.lock()
        v.unlock(PASSWORD)
        assert KEY == v.get("openai").reveal()

    def test_golden_file(self, tmp_path: Path) -> None:
        """The vault file written by the first release opens with its password, forever."""
        path = tmp_path / "golden.db"
        shutil.copy(GOLDEN, path)
        with Store(path) as s:
            v = Vault(s)
            with pytest.raises(VaultUnlockError):
                v.unlock("wrong")
            v.unlock(PASSWORD)
            assert "sk-golden-openai-0123456789abcdef" == v.get("openai").reveal()
            assert "sk-ant-golden-fedcba9876543210" == v.get("anthropic").reveal()
            assert ["anthropic", "openai"] == [c["name"] for c in v.names()]

    def test_names_and_status_work_locked_and_show_no_value(self, vault: Vault) -> None:
        """Listing and status need no password and never contain a value."""
        vault.lock()
        names = vault.names()
        assert [("anthropic", "anthropic"), ("openai", "openai")] == [
            (c["name"], c["provider"]) for c in names
        ]
        status = vault.status()
        assert status["locked"] is True
        assert 2 == status["credentials"]
        assert {"alg": "argon2id13", "ops": 1, "mem": 8192, "parallelism": 1} == status["kdf"]
        assert KEY not in repr((names, status, vault))

    def test_missing_and_delete(self, vault: Vault, store: Store) -> None:
        """get/delete of an unknown name raise CredentialError; delete removes the row."""
        with pytest.raises(CredentialError, match="no credential named 'nope'"):
            vault.get("nope")
        vault.delete("openai")
        with pytest.raises(CredentialError):
            vault.get("openai")
        with pytest.raises(CredentialError):
            vault.delete("openai")
        assert ["anthropic"] == [c["name"] for c in vault.names()]

    def test_init_twice_and_empty_password_are_refused(self, vault: Vault, store: Store) -> None:
        """A store holds one vault; an empty password is refused."""
        with pytest.raises(VaultError, match="already holds a vault"):
            vault.init("another")
        with Store(store.path.with_name("b.db")) as other, pytest.raises(VaultError, match="empty"):
            Vault(other).init("")

    def test_unwritable_init_stays_locked(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the new vault cannot be committed, init raises StoreError and the vault stays locked."""
        real = store.transaction

        @contextlib.contextmanager
        def failing_commit(*, wait: bool = True) -> Iterator[Any]:
            with real(wait=wait) as tx:
                yield tx
                raise StoreError("the commit failed")

        monkeypatch.setattr(store, "transaction", failing_commit)
        v = Vault(store)
        with pytest.raises(StoreError, match="commit failed"):
            v.init(PASSWORD)
        assert v.locked
        assert [] == list(v._key_buffers())
        monkeypatch.undo()
        assert not Vault(store).initialized

    def test_unlock_without_vault(self, store: Store) -> None:
        """Unlocking a store with no vault says how to create one."""
        with pytest.raises(VaultError, match="tokenhub vault init"):
            Vault(store).unlock(PASSWORD)


class TestUnlock:
    def test_wrong_password(self, vault: Vault) -> None:
        """A wrong password raises the generic VaultUnlockError and leaves the vault locked."""
        vault.lock()
        with pytest.raises(VaultUnlockError) as info:
            vault.unlock("correct horse battery stapler")
        assert "invalid password or corrupted vault" == str(info.value)
        assert vault.locked
        with pytest.raises(VaultLockedError):
            vault.get("openai")

    def test_bytearray_password_is_zeroed(self, vault: Vault) -> None:
        """A bytearray password is wiped after unlock, whether it succeeded or not."""
        vault.lock()
        good, bad = bytearray(PASSWORD.encode()), bytearray(b"nope")
        with pytest.raises(VaultUnlockError):
            vault.unlock(bad)
        vault.unlock(good)
        assert bytes(len(good)) == good
        assert bytes(len(bad)) == bad

    def test_password_types(self, vault: Vault) -> None:
        """Passwords are str, bytes or bytearray."""
        vault.lock()
        vault.unlock(PASSWORD.encode())
        with pytest.raises(TypeError):
            vault.unlock(1234)  # type: ignore[arg-type]


class TestParameters:
    @pytest.mark.parametrize(
        "params",
        [KdfParams(1, 256 * crypto.MIB), KdfParams(2, 18 * crypto.MIB), CHEAPEST],
    )
    def test_floor_at_creation(self, store: Store, params: KdfParams) -> None:
        """Parameters below OWASP's 19 MiB / t=2 are refused when creating a vault."""
        with vault_module_testing_off(), pytest.raises(ConfigError, match=r"vault\.kdf"):
            Vault(store).init(PASSWORD, kdf=params)
        assert not Vault(store).initialized

    def test_profiles(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """Named profiles map to stored parameters; unknown names are refused."""
        seen: list[KdfParams] = []
        real = crypto.derive

        def derive(pw: bytearray, salt: bytes, params: KdfParams) -> Any:
            seen.append(params)
            return real(pw, salt, CHEAPEST)

        monkeypatch.setattr(vault_module, "derive", derive)
        with vault_module_testing_off():
            Vault(store).init(PASSWORD, kdf="interactive")
            with pytest.raises(ConfigError, match="unknown profile"):
                Vault(store).init(PASSWORD, kdf="paranoid")
        assert [PROFILES["interactive"]] == seen
        assert 2 == Vault(store).status()["kdf"]["ops"]
        assert PROFILES["moderate"] == KdfParams(3, 256 * crypto.MIB)

    @pytest.mark.parametrize(
        ("column", "value"), [("kdf_opslimit", 11), ("kdf_memlimit", 2 * 1024 * crypto.MIB)]
    )
    def test_ceiling_at_load_before_kdf(
        self, vault: Vault, store: Store, monkeypatch: pytest.MonkeyPatch, column: str, value: int
    ) -> None:
        """A cost above 10 passes or 1 GiB is refused before any key derivation runs."""
        vault.lock()
        with store.transaction() as conn:
            conn.execute(f"UPDATE vault_meta SET {column} = ?", (value,))

        def boom(*_: Any) -> None:
            raise AssertionError("the KDF ran")

        monkeypatch.setattr(vault_module, "derive", boom)
        with pytest.raises(VaultCorruptedError, match="outside the accepted bounds"):
            vault.unlock(PASSWORD)


class vault_module_testing_off:  # noqa: N801 - used like a function
    """Temporarily switch the cheap testing KDF off."""

    def __enter__(self) -> None:
        self.saved = list(vault_module._testing)
        vault_module._testing.clear()

    def __exit__(self, *_: object) -> None:
        vault_module._testing[:] = self.saved


META_FIELDS = [
    "vault_id",
    "kdf_salt",
    "kdf_opslimit",
    "kdf_memlimit",
    "kdf_parallelism",
    "kdf_alg",
    "wrap_alg",
    "format_version",
]


def tampered(value: Any) -> Any:
    if isinstance(value, bytes):
        return flip(value)
    if isinstance(value, int):
        return value + 1
    return value + "x"


class TestTamper:
    @pytest.mark.parametrize("column", META_FIELDS)
    def test_parameter_row(self, vault: Vault, store: Store, column: str) -> None:
        """A changed parameter is detected as damage; never a successful unlock."""
        vault.lock()
        with store.transaction() as conn:
            (old,) = conn.execute(f"SELECT {column} FROM vault_meta").fetchone()
            conn.execute(f"UPDATE vault_meta SET {column} = ?", (tampered(old),))
        with pytest.raises(VaultCorruptedError):
            vault.unlock(PASSWORD)
        assert vault.locked

    @pytest.mark.parametrize("column", [*META_FIELDS[:3], "wrap_nonce", "wrapped_dek"])
    def test_forged_checksum_still_fails(self, vault: Vault, store: Store, column: str) -> None:
        """With the checksum recomputed (a forger), the AEAD unwrap still refuses."""
        vault.lock()
        table = "vault_keys" if column in ("wrap_nonce", "wrapped_dek") else "vault_meta"
        with store.transaction() as conn:
            (old,) = conn.execute(f"SELECT {column} FROM {table}").fetchone()
            conn.execute(f"UPDATE {table} SET {column} = ?", (tampered(old),))
        meta, *_ = _load_unchecked(store)
        nonce, wrapped = store.query("SELECT wrap_nonce, wrapped_dek FROM vault_keys")[0].values()
        with store.transaction() as conn:
            conn.execute("UPDATE vault_meta SET checksum = ?", (meta.checksum(nonce, wrapped),))
        with pytest.raises(VaultUnlockError):
            vault.unlock(PASSWORD)
        assert vault.locked

    @pytest.mark.parametrize("column", ["wrap_nonce", "wrapped_dek"])
    def test_key_row(self, vault: Vault, store: Store, column: str) -> None:
        """A damaged wrapped key is reported as corruption."""
        vault.lock()
        with store.transaction() as conn:
            (old,) = conn.execute(f"SELECT {column} FROM vault_keys").fetchone()
            conn.execute(f"UPDATE vault_keys SET {column} = ?", (flip(old),))
        with pytest.raises(VaultCorruptedError):
            vault.unlock(PASSWORD)

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("nonce", None),
            ("ct", None),
            ("ct", "text, not bytes"),
            ("provider", "anthropic"),
            ("term", 2),
            ("term", 0),
        ],
    )
    def test_credential_row(self, vault: Vault, store: Store, column: str, value: Any) -> None:
        """Any change to a credential's nonce, ciphertext, provider or term is refused."""
        with store.transaction() as conn:
            (old,) = conn.execute(
                f"SELECT {column} FROM vault_credentials WHERE name = 'openai'"
            ).fetchone()
            new = flip(old) if value is None else value
            conn.execute(f"UPDATE vault_credentials SET {column} = ? WHERE name = 'openai'", (new,))
        with pytest.raises(VaultCorruptedError, match="'openai'"):
            vault.get("openai")
        assert OTHER == vault.get("anthropic").reveal()

    def test_swapped_ciphertexts(self, vault: Vault, store: Store) -> None:
        """The OpenAI key moved into the Anthropic row (and back) fails authentication."""
        rows = {r["name"]: r for r in store.query("SELECT * FROM vault_credentials")}
        with store.transaction() as conn:
            for name, other in (("openai", "anthropic"), ("anthropic", "openai")):
                conn.execute(
                    "UPDATE vault_credentials SET nonce = ?, ct = ? WHERE name = ?",
                    (rows[other]["nonce"], rows[other]["ct"], name),
                )
        for name in ("openai", "anthropic"):
            with pytest.raises(VaultCorruptedError):
                vault.get(name)

    def test_renamed_row(self, vault: Vault, store: Store) -> None:
        """A credential row renamed to another name fails (the name is bound)."""
        with store.transaction() as conn:
            conn.execute("DELETE FROM vault_credentials WHERE name = 'anthropic'")
            conn.execute("UPDATE vault_credentials SET name = 'anthropic' WHERE name = 'openai'")
        with pytest.raises(VaultCorruptedError):
            vault.get("anthropic")

    def test_row_from_another_vault(self, vault: Vault, store: Store, tmp_path: Path) -> None:
        """A row copied from another vault, even under the same password, is refused."""
        with Store(tmp_path / "other.db") as other_store:
            other = Vault(other_store)
            other.init(PASSWORD)
            row = store.query("SELECT * FROM vault_credentials WHERE name = 'openai'")[0]
            with other_store.transaction() as conn:
                conn.execute(
                    "INSERT INTO vault_credentials VALUES (?, ?, ?, ?, ?, ?, ?)",
                    tuple(row.values()),
                )
            with pytest.raises(VaultCorruptedError):
                other.get("openai")


class TestDamagedTypes:
    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("vault_id", None),
            ("vault_id", b"short"),
            ("kdf_opslimit", None),
            ("kdf_opslimit", b"\x00"),
            ("kdf_memlimit", None),
            ("kdf_memlimit", 300000.5),
            ("kdf_parallelism", None),
            ("format_version", "one"),
            ("active_term", None),
        ],
    )
    def test_parameter_row_types(self, vault: Vault, store: Store, column: str, value: Any) -> None:
        """A NULL or wrongly typed parameter column is VaultCorruptedError naming it, never TypeError."""
        vault.lock()
        with store.transaction() as conn:
            conn.execute(f"UPDATE vault_meta SET {column} = ?", (value,))
        with pytest.raises(VaultCorruptedError, match="damaged") as caught:
            vault.unlock(PASSWORD)
        assert column in str(caught.value) or column == "active_term"
        assert vault.locked

    @pytest.mark.parametrize(
        ("column", "value", "error"),
        [("provider", None, "provider"), ("provider", b"\x00", "provider"), ("name", None, "name")],
    )
    def test_credential_row_types(
        self, vault: Vault, store: Store, column: str, value: Any, error: str
    ) -> None:
        """A NULL or non-text name or provider is VaultCorruptedError in get and rotate_key."""
        with store.transaction() as conn:
            conn.execute(
                f"UPDATE vault_credentials SET {column} = ? WHERE name = 'openai'", (value,)
            )
        if column == "provider":
            with pytest.raises(VaultCorruptedError, match=error):
                vault.get("openai")
        with pytest.raises(VaultCorruptedError, match=error):
            vault.rotate_key()
        assert vault.status()["term"] == 1  # nothing was written
        assert OTHER == vault.get("anthropic").reveal()


NFD = "cafe\u0301 cre\u0300me"  # "café crème" decomposed
NFC = "caf\u00e9 cr\u00e8me"


class TestPasswordText:
    @pytest.mark.parametrize(("given", "typed"), [(NFD, NFC), (NFC, NFD), (NFD, NFD.encode())])
    def test_normalised(self, store: Store, given: str, typed: str | bytes) -> None:
        """A password opens the vault in any Unicode normal form, as str or UTF-8 bytes."""
        v = Vault(store)
        v.init(given)
        v.put("openai", KEY)
        v.lock()
        v.unlock(typed)
        assert KEY == v.get("openai").reveal()
        v.change_password(bytearray(NFD.encode()))
        v.lock()
        v.unlock(NFC)
        assert not v.locked

    def test_vault_from_before_normalisation(
        self, store: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A vault whose password was stored unnormalised still opens with the same form."""
        with monkeypatch.context() as m:
            m.setattr(vault_module, "nfc", lambda pw: None)  # what init did before
            v = Vault(store)
            v.init(NFD)
            v.put("openai", KEY)
            v.lock()
        seen: list[bytes] = []
        real = crypto.derive

        def derive(pw: bytearray, salt: bytes, params: KdfParams) -> Any:
            seen.append(bytes(pw))
            return real(pw, salt, params)

        monkeypatch.setattr(vault_module, "derive", derive)
        v.unlock(NFD)
        assert seen == [NFC.encode(), NFD.encode()]  # the NFC form first, then the bytes given
        assert KEY == v.get("openai").reveal()
        v.lock()
        with pytest.raises(VaultUnlockError):
            v.unlock(NFC)

    @pytest.mark.parametrize("bad", ["pw\n", "pw\r\n", "p\nw", b"pw\n", b"\rpw"])
    @pytest.mark.parametrize("mutable", [False, True])
    def test_line_breaks_refused(self, store: Store, bad: str | bytes, mutable: bool) -> None:
        """A new password with CR or LF (the CLI could never give it back) is refused, unquoted."""

        def given() -> str | bytes | bytearray:
            return bytearray(bad) if mutable and isinstance(bad, bytes) else bad

        v = Vault(store)
        with pytest.raises(VaultError, match="line break") as caught:
            v.init(given())
        assert "pw" not in str(caught.value)
        assert not v.initialized
        v.init(PASSWORD)
        with pytest.raises(VaultError, match="line break"):
            v.change_password(given())
        v.lock()
        v.unlock(PASSWORD)

    def test_lone_surrogate(self, store: Store) -> None:
        """A str password that is not valid Unicode is a VaultError, not a UnicodeEncodeError."""
        v = Vault(store)
        with pytest.raises(VaultError, match="valid Unicode") as caught:
            v.init("secret\udc80pw")
        assert "secret" not in repr(caught.value)
        assert caught.value.__context__ is None


def _load_unchecked(store: Store) -> tuple[Any, ...]:
    row = store.query("SELECT * FROM vault_meta")[0]
    import attrs

    return (crypto.Header(**{f.name: row[f.name] for f in attrs.fields(crypto.Header)}),)


class TestPasswordChange:
    def test_rekey(self, vault: Vault, store: Store) -> None:
        """Old password fails, new works, credential rows are byte-identical, WAL truncated."""
        before = store.query("SELECT * FROM vault_credentials ORDER BY name")
        (old_wrapped,) = store.query("SELECT wrapped_dek FROM vault_keys")[0].values()
        (old_salt,) = store.query("SELECT kdf_salt FROM vault_meta")[0].values()
        vault.change_password(bytearray(b"new password"))
        assert before == store.query("SELECT * FROM vault_credentials ORDER BY name")
        assert old_salt != store.query("SELECT kdf_salt FROM vault_meta")[0]["kdf_salt"]
        vault.lock()
        with pytest.raises(VaultUnlockError):
            vault.unlock(PASSWORD)
        vault.unlock("new password")
        assert KEY == vault.get("openai").reveal()
        assert old_wrapped not in file_bytes(store.path)
        assert 0 == Path(f"{store.path}-wal").stat().st_size

    def test_needs_unlocked_vault(self, vault: Vault) -> None:
        """Changing the password of a locked vault is refused."""
        vault.lock()
        with pytest.raises(VaultLockedError):
            vault.change_password("x")


class TestRotate:
    def test_rotate_key(self, vault: Vault, store: Store) -> None:
        """A new term re-encrypts every row; the old wrapped key is gone from the files."""
        (old_wrapped,) = store.query("SELECT wrapped_dek FROM vault_keys")[0].values()
        old_ct = store.query("SELECT ct FROM vault_credentials WHERE name = 'openai'")[0]["ct"]
        assert 2 == vault.rotate_key()
        rows = store.query("SELECT name, term, ct FROM vault_credentials")
        assert {2} == {r["term"] for r in rows}
        assert old_ct not in [r["ct"] for r in rows]
        assert KEY == vault.get("openai").reveal()
        vault.put("new", "sk-new-after-rotation-000")
        assert 2 == store.query("SELECT term FROM vault_credentials WHERE name = 'new'")[0]["term"]
        keys = store.query("SELECT term, wrapped_dek, retired_at FROM vault_keys ORDER BY term")
        assert [1, 2] == [k["term"] for k in keys]
        assert keys[0]["wrapped_dek"] is None
        assert keys[0]["retired_at"] is not None
        assert old_wrapped not in file_bytes(store.path)
        vault.lock()
        vault.unlock(PASSWORD)
        assert KEY == vault.get("openai").reveal()

    def test_failed_rotation_changes_nothing(self, vault: Vault, store: Store) -> None:
        """A corrupted row aborts the rotation as one transaction; the old term still works."""
        (ct,) = store.query("SELECT ct FROM vault_credentials WHERE name = 'openai'")[0].values()
        with store.transaction() as conn:
            conn.execute("UPDATE vault_credentials SET ct = ? WHERE name = 'openai'", (b"!" + ct,))
        before = store.query("SELECT * FROM vault_credentials ORDER BY name")
        with pytest.raises(VaultCorruptedError):
            vault.rotate_key()
        assert before == store.query("SELECT * FROM vault_credentials ORDER BY name")
        assert OTHER == vault.get("anthropic").reveal()


class TestLock:
    def test_every_operation_refuses(self, vault: Vault) -> None:
        """After lock(), every operation that needs a key raises VaultLockedError."""
        vault.lock()
        for op in (
            lambda: vault.get("openai"),
            lambda: vault.put("x", "y"),
            lambda: vault.delete("openai"),
            vault.rotate_key,
            lambda: vault.change_password("x"),
        ):
            with pytest.raises(VaultLockedError):
                op()
        assert issubclass(VaultLockedError, CredentialError)

    def test_key_buffers_are_zeroed(self, backend: str, store: Store) -> None:
        """lock() zeroes the KEK and DEK buffers in place."""
        v = Vault(store)
        v.init(PASSWORD)
        keys = list(v._key_buffers())
        assert 2 == len(keys)
        assert not any(k.zeroed() for k in keys)
        v.lock()
        assert all(k.zeroed() for k in keys)
        assert [] == list(v._key_buffers())
        v.lock()  # idempotent

    def test_auto_lock_after_idle(self, store: Store) -> None:
        """With auto_lock, the vault locks itself after that much idle time; use resets it."""
        clock = FakeClock()
        v = Vault(store, auto_lock=60, clock=clock.monotonic)
        v.init(PASSWORD)
        clock.advance(59)
        v.put("openai", KEY)
        clock.advance(59)
        assert KEY == v.get("openai").reveal()
        clock.advance(60)
        with pytest.raises(VaultLockedError):
            v.get("openai")
        assert v.locked
        actions = [r["action"] for r in store.query("SELECT action FROM audit_log")]
        assert "vault.auto_lock" == actions[-1]

    def test_auto_lock_timer_fires_without_use(self, store: Store) -> None:
        """The timer thread locks an idle vault even if nothing touches it."""
        v = Vault(store, auto_lock=0.01)
        v.init(PASSWORD)
        timer = v._timer
        assert timer is not None
        keys = list(v._key_buffers())
        timer.join(timeout=10)
        # The timer may re-arm once if init's last use was very recent.
        while v._timer is not None and v._timer is not timer:
            timer = v._timer
            timer.join(timeout=10)
        assert all(k.zeroed() for k in keys)
        assert v.locked

    def test_threads(self, vault: Vault) -> None:
        """Concurrent put/get/lock/unlock from threads never corrupt or return garbage."""
        errors: list[BaseException] = []

        def work(i: int) -> None:
            for j in range(30):
                try:
                    if i == 0 and j % 5 == 0:
                        vault.lock()
                        vault.unlock(PASSWORD)
                    vault.put(f"k{i}", f"sk-thread-{i}-{j}")
                    assert f"sk-thread-{i}-{j}" == vault.get(f"k{i}").reveal()
                except VaultLockedError:
                    pass
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [] == errors
        vault.unlock(PASSWORD)
        assert KEY == vault.get("openai").reveal()


class TestNonces:
    def test_unique_and_sized(self, vault: Vault) -> None:
        """10^4 seals draw distinct nonces; ciphertext = plaintext + 16-byte tag."""
        _, dek = vault._keys()
        nonces = set()
        for i in range(10_000):
            nonce, ct = crypto.seal(dek, b"x" * (i % 50), b"aad")
            assert 24 == len(nonce)
            assert i % 50 + 16 == len(ct)
            nonces.add(nonce)
        assert 10_000 == len(nonces)


class TestSecret:
    def test_masked_unpicklable_and_comparable(self) -> None:
        """Secrets show a mask, refuse pickling and compare by value."""
        s = Secret(KEY)
        assert KEY not in f"{s} {s!r} {s:>40}"
        with pytest.raises(TypeError):
            pickle.dumps(s)
        assert Secret(KEY) == s
        assert Secret(KEY + "x") != s
        assert Secret("short") != s


class TestHub:
    def hub_config(self, fake: FakeProvider, path: Path, **vault: Any) -> dict[str, Any]:
        cfg = config_for(fake)
        cfg["providers"]["openai"]["api_key"] = {"vault": "openai"}
        cfg["store"] = {"path": str(path)}
        if vault:
            cfg["vault"] = vault
        return cfg

    @pytest.fixture
    def db(self, tmp_path: Path) -> Path:
        path = tmp_path / "hub.db"
        with Store(path) as s:
            v = Vault(s)
            v.init(PASSWORD)
            v.put("openai", KEY, provider="openai")
        return path

    @pytest.mark.anyio
    async def test_unlock_chat_lock(self, fake: FakeProvider, db: Path) -> None:
        """Keys are read per request: locked fails, unlocked sends the key, lock fails again."""
        async with Hub.from_config(self.hub_config(fake, db)) as hub:
            with pytest.raises(VaultLockedError):
                await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
            assert [] == fake.requests
            hub.vault.unlock(PASSWORD)
            await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
            assert f"Bearer {KEY}" == fake.requests[-1].headers["authorization"]
            hub.vault.lock()
            with pytest.raises(VaultLockedError) as info:
                await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
            assert info.value.trace is not None
            assert 1 == len(fake.requests)

    @pytest.mark.anyio
    async def test_lock_during_a_stream(self, fake: FakeProvider, db: Path) -> None:
        """A stream already sent finishes after lock(); the next request fails."""
        async with Hub.from_config(self.hub_config(fake, db)) as hub:
            hub.vault.unlock(PASSWORD)
            text = []
            async with hub.stream(
                [{"role": "user", "content": "tell me more"}], model="gpt-4o-mini"
            ) as s:
                async for chunk in s:
                    hub.vault.lock()
                    text.append(chunk.text or "")
            assert "echo: tell me more" == "".join(text)
            with pytest.raises(VaultLockedError):
                await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")

    @pytest.mark.anyio
    async def test_password_from_env(
        self, fake: FakeProvider, db: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """vault.password {'env': NAME} unlocks when the Hub is built."""
        monkeypatch.setenv("TOKENHUB_TEST_VAULT_PW", PASSWORD)
        cfg = self.hub_config(fake, db, password={"env": "TOKENHUB_TEST_VAULT_PW"})
        async with Hub.from_config(cfg) as hub:
            assert not hub.vault.locked
            await hub.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
        assert hub.vault.locked  # closing the Hub locks the vault

    @pytest.mark.anyio
    async def test_password_from_file(self, fake: FakeProvider, db: Path, tmp_path: Path) -> None:
        """vault.password {'file': PATH} reads the password (without its newline)."""
        pw = tmp_path / "pw"
        pw.write_text(PASSWORD + "\n")
        async with Hub.from_config(self.hub_config(fake, db, password={"file": str(pw)})) as hub:
            assert not hub.vault.locked

    @pytest.mark.anyio
    async def test_password_problems(
        self, fake: FakeProvider, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Unset env var or unreadable file: ConfigError; wrong password: VaultUnlockError."""
        monkeypatch.delenv("TOKENHUB_TEST_VAULT_PW", raising=False)
        with pytest.raises(ConfigError, match=r"vault\.password\.env: TOKENHUB_TEST_VAULT_PW"):
            Hub.from_config(self.hub_config(fake, db, password={"env": "TOKENHUB_TEST_VAULT_PW"}))
        with pytest.raises(ConfigError, match=r"vault\.password\.file: cannot read it"):
            Hub.from_config(self.hub_config(fake, db, password={"file": str(tmp_path / "missing")}))
        monkeypatch.setenv("TOKENHUB_TEST_VAULT_PW", "wrong")
        with pytest.raises(VaultUnlockError):
            Hub.from_config(self.hub_config(fake, db, password={"env": "TOKENHUB_TEST_VAULT_PW"}))

    @pytest.mark.anyio
    async def test_store_argument_and_missing_store(self, fake: FakeProvider, db: Path) -> None:
        """from_config(store=...) sets the path; a Hub without a store has no vault."""
        cfg = self.hub_config(fake, db)
        del cfg["store"]
        with pytest.raises(ConfigError, match=r"providers\.openai\.api_key"):
            Hub.from_config(cfg)
        async with Hub.from_config(cfg, store=db) as hub:
            assert hub.vault.initialized
        async with Hub.from_config(config_for(fake)) as plain:
            with pytest.raises(StoreError, match="no store"):
                _ = plain.vault

    @pytest.mark.anyio
    async def test_bad_store_file(self, fake: FakeProvider, tmp_path: Path) -> None:
        """A file that is not SQLite raises StoreError naming it."""
        bad = tmp_path / "bad.db"
        bad.write_bytes(b"not a database at all" * 100)
        with pytest.raises(StoreError, match=r"bad\.db"):
            Hub.from_config(config_for(fake), store=bad)


class TestDisk:
    def test_no_plaintext_in_files(self, vault: Vault, store: Store) -> None:
        """After puts, updates, deletes, rotation and rekey, no key is in the file or WAL."""
        vault.put("openai", KEY + "-v2")
        vault.delete("anthropic")
        vault.rotate_key()
        vault.change_password("n3w-pa55phrase")
        vault.lock()
        store.close()
        data = file_bytes(store.path)
        for secret in (KEY, OTHER, KEY + "-v2", PASSWORD, "n3w-pa55phrase"):
            assert secret.encode() not in data
        conn = sqlite3.connect(store.path)
        assert [("ok",)] == conn.execute("PRAGMA integrity_check").fetchall()
        conn.close()
