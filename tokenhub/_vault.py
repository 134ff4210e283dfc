"""The credential vault: Argon2id-derived keys and XChaCha20-Poly1305-sealed credentials.

Key hierarchy: password → Argon2id (libsodium, parameters stored per vault) →
key-encryption key (KEK) → wraps a random data key (DEK, one per *term*) →
the DEK seals each credential with a fresh 24-byte nonce and associated data
binding the vault id, the credential's name and provider, and the term.

The AEAD unwrap of the DEK is the password check. KEK and DEK live in cffi
buffers that are zeroed on :meth:`Vault.lock` (through PyNaCl's private
``nacl._sodium``; without it, in ``bytearray`` copies, with a warning). What
Python cannot wipe: ``str`` passwords, and the decrypted keys handed to the
HTTP layer as ``str``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import nacl.bindings
import nacl.exceptions
import nacl.utils

from tokenhub._redact import get_logger, register
from tokenhub._secret import Secret
from tokenhub._storage import SealedCredential, VaultMeta, WrappedKey
from tokenhub.errors import (
    ConfigError,
    CredentialError,
    VaultCorruptedError,
    VaultError,
    VaultLockedError,
    VaultUnlockError,
)

try:  # the private cffi bindings let keys live in buffers we can zero
    from nacl import _sodium
except ImportError:  # pragma: no cover - depends on the PyNaCl build
    _sodium = None
_ffi: Any = getattr(_sodium, "ffi", None)
_lib: Any = getattr(_sodium, "lib", None)
_warned = False


def _warn_without_buffers() -> None:
    global _warned  # noqa: PLW0603 - warn once per process
    if _lib is None and not _warned:
        _warned = True
        log.warning("PyNaCl's nacl._sodium is missing: vault keys live in bytearrays")


if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tokenhub._storage import StoreBackend, StoreTransaction

__all__ = ["CHEAPEST", "PROFILES", "KdfParams", "Vault", "VaultKeySource"]

log = get_logger("tokenhub.vault")

FORMAT_VERSION: Final[int] = 1
KDF_ALG: Final[str] = "argon2id13"
WRAP_ALG: Final[str] = "xchacha20poly1305-ietf"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
SALT_BYTES: Final = 16
MIB: Final = 1 << 20


@attrs.frozen
class KdfParams:
    """Argon2id cost: ``ops`` passes over ``mem`` bytes (libsodium units), one lane."""

    ops: int
    mem: int

    def check_floor(self) -> None:
        """Refuse parameters below OWASP's minimum (19 MiB, t=2) for a new vault."""
        if self.ops < FLOOR.ops or self.mem < FLOOR.mem:
            raise ConfigError(
                [("vault.kdf", f"below the minimum of {FLOOR.ops} passes over 19 MiB")]
            )


#: Named profiles: ``moderate`` (the default, ~0.3 s here) and ``interactive`` (small machines).
PROFILES: Final = {
    "moderate": KdfParams(ops=3, mem=256 * MIB),
    "interactive": KdfParams(ops=2, mem=64 * MIB),
}
FLOOR: Final = KdfParams(ops=2, mem=19 * MIB)
#: Refused at load before any KDF work, so a tampered file cannot turn unlock into a DoS.
CEILING: Final = KdfParams(ops=10, mem=1024 * MIB)
#: libsodium's minimum: for tests only (see :func:`tokenhub.testing.insecure_vault_kdf`).
CHEAPEST: Final = KdfParams(ops=1, mem=8192)
_testing: list[KdfParams] = []


def testing_kdf() -> KdfParams | None:
    """The parameters forced by the testing switch, if it is on."""
    return _testing[-1] if _testing else None


# -- key material ------------------------------------------------------------------


class _Key:
    """A 32-byte key in a buffer that :meth:`wipe` zeroes."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        if _lib is not None:
            self.buf: Any = _ffi.new("unsigned char[]", KEY_BYTES)
            if _lib.sodium_mlock(self.buf, KEY_BYTES) != 0:  # pragma: no cover - RLIMIT_MEMLOCK
                log.debug("sodium_mlock failed; vault keys may be swapped to disk")
        else:
            self.buf = bytearray(KEY_BYTES)

    def wipe(self) -> None:
        if _lib is not None:
            _lib.sodium_memzero(self.buf, KEY_BYTES)
            _lib.sodium_munlock(self.buf, KEY_BYTES)
        else:
            self.buf[:] = bytes(KEY_BYTES)

    def zeroed(self) -> bool:
        """Whether every byte is zero (for tests of :meth:`Vault.lock`)."""
        data = bytes(_ffi.buffer(self.buf)) if _lib is not None else bytes(self.buf)
        return data == bytes(KEY_BYTES)


def _derive(password: bytearray, salt: bytes, params: KdfParams) -> _Key:
    key = _Key()
    alg = nacl.bindings.crypto_pwhash_ALG_ARGON2ID13
    if _lib is not None:
        pw = _ffi.from_buffer(password)
        rc = _lib.crypto_pwhash(
            key.buf, KEY_BYTES, pw, len(password), salt, params.ops, params.mem, alg
        )
        if rc != 0:  # pragma: no cover - out of memory
            key.wipe()
            raise VaultError("argon2id failed (not enough memory?)")
    else:
        out = nacl.bindings.crypto_pwhash_alg(
            KEY_BYTES, bytes(password), salt, params.ops, params.mem, alg
        )
        key.buf[:] = out
    return key


def _seal(key: _Key, message: bytes | _Key, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt with a fresh random nonce; return ``(nonce, ciphertext‖tag)``.

    A ``_Key`` message (wrapping a DEK) is read from its buffer, never copied to ``bytes``.
    """
    nonce = nacl.utils.random(NONCE_BYTES)
    if _lib is not None:
        size = KEY_BYTES if isinstance(message, _Key) else len(message)
        data = message.buf if isinstance(message, _Key) else message
        out = _ffi.new("unsigned char[]", size + 16)
        n = _ffi.new("unsigned long long *")
        _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
            out, n, data, size, aad, len(aad), _ffi.NULL, nonce, key.buf
        )
        return nonce, bytes(_ffi.buffer(out, n[0]))
    plain = bytes(message.buf) if isinstance(message, _Key) else message
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, bytes(key.buf))
    return nonce, ct


def _open(key: _Key, nonce: bytes, ct: bytes, aad: bytes, into: _Key | None = None) -> bytes:
    """Decrypt and authenticate; into ``into``'s buffer when given. Raises ``CryptoError``."""
    if len(nonce) != NONCE_BYTES or len(ct) < 16:
        raise nacl.exceptions.CryptoError("bad lengths")
    if _lib is not None:
        out = into.buf if into is not None else _ffi.new("unsigned char[]", len(ct) - 16)
        if into is not None and len(ct) - 16 != KEY_BYTES:
            raise nacl.exceptions.CryptoError("a wrapped key must be 32 bytes")
        n = _ffi.new("unsigned long long *")
        rc = _lib.crypto_aead_xchacha20poly1305_ietf_decrypt(
            out, n, _ffi.NULL, ct, len(ct), aad, len(aad), nonce, key.buf
        )
        if rc != 0:
            raise nacl.exceptions.CryptoError("authentication failed")
        if into is not None:
            return b""
        plain = bytes(_ffi.buffer(out, n[0]))
        _lib.sodium_memzero(out, len(ct) - 16)
        return plain
    plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, aad, nonce, bytes(key.buf))
    if into is not None:
        if len(plain) != KEY_BYTES:
            raise nacl.exceptions.CryptoError("a wrapped key must be 32 bytes")
        into.buf[:] = plain
        return b""
    return bytes(plain)


def _fields(*parts: bytes | str | int) -> bytes:
    """An unambiguous encoding: each part length-prefixed."""
    out = bytearray()
    for part in parts:
        if isinstance(part, int):
            data = part.to_bytes(8, "big", signed=True)
        elif isinstance(part, str):
            data = part.encode()
        else:
            data = part
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def _password(password: str | bytes | bytearray) -> bytearray:
    if isinstance(password, bytearray):
        return password
    if isinstance(password, str):
        return bytearray(password.encode())
    if isinstance(password, bytes):
        return bytearray(password)
    raise TypeError("a password is str, bytes or bytearray")


def _zero(data: bytearray) -> None:
    if _lib is not None and data:
        _lib.sodium_memzero(_ffi.from_buffer(data), len(data))
    else:
        data[:] = bytes(len(data))


@attrs.frozen
class _Meta:
    vault_id: bytes
    format_version: int
    kdf_alg: str
    kdf_opslimit: int
    kdf_memlimit: int
    kdf_parallelism: int
    kdf_salt: bytes
    wrap_alg: str
    active_term: int

    @property
    def params(self) -> KdfParams:
        return KdfParams(self.kdf_opslimit, self.kdf_memlimit)

    def wrap_aad(self, term: int) -> bytes:
        return b"tokenhub/v1/dek\x00" + _fields(
            self.vault_id,
            self.format_version,
            self.kdf_alg,
            self.kdf_opslimit,
            self.kdf_memlimit,
            self.kdf_parallelism,
            self.kdf_salt,
            term,
        )

    def cred_aad(self, name: str, provider: str, term: int) -> bytes:
        return b"tokenhub/v1/cred\x00" + _fields(self.vault_id, name, provider, term)

    def checksum(self, wrap_nonce: bytes, wrapped: bytes) -> bytes:
        """Detects a damaged row before the KDF runs (a forger can recompute it: not a MAC)."""
        return hashlib.blake2b(
            self.wrap_aad(self.active_term) + _fields(wrap_nonce, wrapped), digest_size=32
        ).digest()


# -- the vault -----------------------------------------------------------------------


class Vault:
    """Credentials sealed in the store, usable only while the vault is unlocked.

    Thread- and task-safe. Every method that needs a key raises
    :class:`~tokenhub.errors.VaultLockedError` while locked; :meth:`get`
    decrypts on every call and keeps nothing. ``auto_lock`` locks after that
    many idle seconds (a timer thread runs only while unlocked). The vault reaches
    the store only through :class:`~tokenhub._storage.StoreBackend`.
    """

    def __init__(
        self,
        store: StoreBackend,
        *,
        auto_lock: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _warn_without_buffers()
        self._store = store
        self._auto_lock = auto_lock
        self._clock = clock
        self._lock = threading.RLock()
        self._kek: _Key | None = None
        self._dek: _Key | None = None
        self._meta: _Meta | None = None
        self._used = 0.0
        self._timer: threading.Timer | None = None

    def __repr__(self) -> str:
        state = "locked" if self.locked else "unlocked"
        return f"<Vault {state} {self._store.name!r}>"

    # -- state

    @property
    def initialized(self) -> bool:
        """Whether the store holds a vault."""
        with self._store.reading() as reader:
            return bool(reader.vault_meta())

    @property
    def locked(self) -> bool:
        """Whether the vault is locked (no key material in memory)."""
        with self._lock:
            self._check_idle()
            return self._dek is None

    def status(self) -> dict[str, Any]:
        """Plain data: initialized, locked, parameters, term, credential count, auto-lock."""
        with self._store.reading() as reader:
            rows = reader.vault_meta()
            count = len(reader.credentials())
        out: dict[str, Any] = {
            "initialized": bool(rows),
            "locked": self.locked,
            "credentials": count,
            "auto_lock": self._auto_lock,
        }
        if rows:
            m = rows[0]
            out.update(
                kdf={
                    "alg": m.kdf_alg,
                    "ops": m.kdf_opslimit,
                    "mem": m.kdf_memlimit,
                    "parallelism": m.kdf_parallelism,
                },
                term=m.active_term,
            )
        return out

    def names(self) -> list[dict[str, Any]]:
        """The stored credentials' names, providers and times (never values; works locked)."""
        with self._store.reading() as reader:
            found = reader.credentials()
        return [
            {
                "name": c.name,
                "provider": c.provider,
                "term": c.term,
                "created_at": c.created_at,
                "updated_at": c.updated_at,
            }
            for c in found
        ]

    # -- lifecycle

    def init(self, password: str | bytes | bytearray, *, kdf: str | KdfParams = "moderate") -> None:
        """Create the vault with a new password and leave it unlocked."""
        params = self._params(kdf)
        pw = _password(password)
        del password  # tracebacks rendered with locals must not show it
        try:
            if not pw:
                raise VaultError("the password is empty")
            if self.initialized:
                raise VaultError("the store already holds a vault")
            salt = nacl.utils.random(SALT_BYTES)
            meta = _Meta(
                nacl.utils.random(16),
                FORMAT_VERSION,
                KDF_ALG,
                params.ops,
                params.mem,
                1,
                salt,
                WRAP_ALG,
                1,
            )
            kek = _derive(pw, salt, params)
        finally:
            _zero(pw)
        dek = _Key()
        _fill_random(dek)
        nonce, wrapped = _seal(kek, dek, meta.wrap_aad(1))
        now = time.time()
        with self._lock:
            with _wiped_on_error(kek, dek), self._store.transaction() as tx:
                if tx.vault_meta():
                    raise VaultError("the store already holds a vault")
                tx.set_vault_meta(_stored(meta, nonce, wrapped, now))
                tx.put_vault_key(WrappedKey(1, nonce, wrapped, now))
                _audit(tx, "vault.init", "", {"kdf": attrs.asdict(params)})
            self._install(meta, kek, dek)

    def unlock(self, password: str | bytes | bytearray) -> None:
        """Unlock with ``password`` (a ``bytearray`` is zeroed after use).

        Raises :class:`~tokenhub.errors.VaultUnlockError` (one generic message)
        on a wrong password, changing nothing (a locked vault stays locked);
        :class:`~tokenhub.errors.VaultCorruptedError` when the stored parameter
        row is damaged or its cost is out of bounds (checked before the KDF runs).
        """
        pw = _password(password)
        del password  # tracebacks rendered with locals must not show it
        try:
            meta, nonce, wrapped = self._load()
            kek = _derive(pw, meta.kdf_salt, meta.params)
        finally:
            _zero(pw)
        dek = _Key()
        try:
            _open(kek, nonce, wrapped, meta.wrap_aad(meta.active_term), into=dek)
        except nacl.exceptions.CryptoError:
            kek.wipe()
            dek.wipe()
            log.warning("vault unlock failed")
            raise VaultUnlockError from None
        with self._lock:
            self._install(meta, kek, dek)
        log.info("vault unlocked")

    def lock(self) -> None:
        """Zero the key buffers and lock. Idempotent."""
        with self._lock:
            self._wipe()
        log.info("vault locked")

    def change_password(
        self, new_password: str | bytes | bytearray, *, kdf: str | KdfParams | None = None
    ) -> None:
        """Re-wrap the data key under a new password (and a new salt); credentials are untouched.

        The vault must be unlocked. The parameter row and the wrapped key change in
        one transaction; the store is checkpointed afterwards, so the old wrapped
        key does not linger in ``-wal``.
        """
        pw = _password(new_password)
        del new_password  # tracebacks rendered with locals must not show it
        try:
            if not pw:
                raise VaultError("the password is empty")
            with self._lock:
                meta, dek = self._keys()
                params = meta.params if kdf is None else self._params(kdf)
                salt = nacl.utils.random(SALT_BYTES)
                new = attrs.evolve(meta, kdf_salt=salt, kdf_opslimit=params.ops)
                new = attrs.evolve(new, kdf_memlimit=params.mem)
                kek = _derive(pw, salt, params)
                term = meta.active_term
                nonce, wrapped = _seal(kek, dek, new.wrap_aad(term))
                now = time.time()
                with _wiped_on_error(kek), self._store.transaction() as tx:
                    old = tx.vault_key(term) or WrappedKey(term, None, None, now)
                    tx.set_vault_meta(_stored(new, nonce, wrapped, now))
                    tx.put_vault_key(attrs.evolve(old, wrap_nonce=nonce, wrapped_dek=wrapped))
                    _audit(tx, "vault.passwd", "", {"kdf": attrs.asdict(params)})
                assert self._kek is not None  # noqa: S101 - _keys() checked
                self._kek.wipe()
                self._kek, self._meta = kek, new
        finally:
            _zero(pw)
        self._store.checkpoint()

    def rotate_key(self) -> int:
        """Start a new data-key term, re-encrypt every credential under it, retire the old key.

        One transaction; the store is checkpointed afterwards. Returns the new term.
        """
        with self._lock:
            meta, old = self._keys()
            assert self._kek is not None  # noqa: S101 - _keys() checked
            term = meta.active_term + 1
            new_meta = attrs.evolve(meta, active_term=term)
            dek = _Key()
            _fill_random(dek)
            nonce, wrapped = _seal(self._kek, dek, new_meta.wrap_aad(term))
            now = time.time()
            with _wiped_on_error(dek), self._store.transaction() as tx:
                rows = tx.vault_meta()
                if len(rows) != 1:
                    raise VaultCorruptedError("the vault has more than one parameter row")
                credentials = tx.credentials()
                for c in credentials:
                    plain = self._decrypt(meta, old, c)
                    n2, ct2 = _seal(dek, plain, new_meta.cred_aad(c.name, c.provider, term))
                    tx.put_credential(attrs.evolve(c, term=term, nonce=n2, ct=ct2))
                retired = tx.vault_key(meta.active_term)
                created = retired.created_at if retired is not None else now
                tx.put_vault_key(WrappedKey(meta.active_term, None, None, created, now))
                tx.put_vault_key(WrappedKey(term, nonce, wrapped, now))
                checksum = new_meta.checksum(nonce, wrapped)
                tx.set_vault_meta(attrs.evolve(rows[0], active_term=term, checksum=checksum))
                detail = {"term": term, "credentials": len(credentials)}
                _audit(tx, "vault.rotate", "", detail)
            old.wipe()
            self._dek, self._meta = dek, new_meta
        self._store.checkpoint()
        return term

    # -- credentials

    def put(self, name: str, value: str | Secret, *, provider: str = "") -> None:
        """Seal ``value`` under ``name`` (replacing any previous value) in one transaction."""
        if not name:
            raise VaultError("a credential needs a name")
        if not isinstance(value, Secret | str):
            raise TypeError("a credential value is a str or a Secret")
        secret = value if isinstance(value, Secret) else Secret(value)
        del value  # tracebacks rendered with locals show only the masked Secret
        register(secret)
        with self._lock:
            meta, dek = self._keys()
            term = meta.active_term
            aad = meta.cred_aad(name, provider, term)
            nonce, ct = _seal(dek, secret.reveal().encode(), aad)
            now = time.time()
            with self._store.transaction() as tx:
                existing = tx.credential(name)
                created = existing.created_at if existing is not None else now
                tx.put_credential(SealedCredential(name, provider, term, nonce, ct, created, now))
                _audit(tx, "vault.put" if existing is None else "vault.update", name, {})

    def get(self, name: str) -> Secret:
        """Decrypt the credential ``name`` now; nothing is cached.

        Raises :class:`~tokenhub.errors.VaultLockedError`,
        :class:`~tokenhub.errors.CredentialError` when there is no such
        credential, or :class:`~tokenhub.errors.VaultCorruptedError`.
        """
        with self._lock:
            meta, dek = self._keys()
            with self._store.reading() as reader:
                sealed = reader.credential(name)
            if sealed is None:
                raise CredentialError(f"no credential named {name!r} in the vault")
            plain = self._decrypt(meta, dek, sealed)
        secret = Secret(plain.decode())
        register(secret)
        return secret

    def delete(self, name: str) -> None:
        """Remove ``name``, securely deleted; ``CredentialError`` if there is no such credential."""
        with self._lock:
            self._keys()
            with self._store.transaction() as tx:
                if not tx.delete_credential(name):
                    raise CredentialError(f"no credential named {name!r} in the vault")
                _audit(tx, "vault.delete", name, {})
        self._store.checkpoint()

    # -- internals

    @staticmethod
    def _params(kdf: str | KdfParams) -> KdfParams:
        forced = testing_kdf()
        if forced is not None:
            return forced
        if isinstance(kdf, str):
            if kdf not in PROFILES:
                known = ", ".join(PROFILES)
                raise ConfigError([("vault.kdf", f"unknown profile {kdf!r}; known: {known}")])
            return PROFILES[kdf]
        kdf.check_floor()
        if kdf.ops > CEILING.ops or kdf.mem > CEILING.mem:
            raise ConfigError([("vault.kdf", "above the maximum of 10 passes over 1 GiB")])
        return kdf

    def _load(self) -> tuple[_Meta, bytes, bytes]:
        """Read and check the stored parameters; never runs the KDF."""
        with self._store.reading() as reader:
            rows = reader.vault_meta()
            if not rows:
                raise VaultError("the store holds no vault; create one with `tokenhub vault init`")
            if len(rows) != 1:
                raise VaultCorruptedError("the vault has more than one parameter row")
            row = rows[0]
            key = reader.vault_key(row.active_term)
        nonce, wrapped = (key.wrap_nonce, key.wrapped_dek) if key is not None else (None, None)
        if nonce is None or wrapped is None:
            raise VaultCorruptedError("the vault's active key is missing")
        if (
            row.format_version != FORMAT_VERSION
            or row.kdf_alg != KDF_ALG
            or row.wrap_alg != WRAP_ALG
            or row.kdf_parallelism != 1
            or row.vault_id is None
            or row.kdf_salt is None
            or len(row.kdf_salt) != SALT_BYTES
        ):
            raise VaultCorruptedError("the vault's parameters are not ones tokenhub writes")
        meta = _Meta(
            row.vault_id,
            row.format_version,
            row.kdf_alg,
            row.kdf_opslimit,
            row.kdf_memlimit,
            row.kdf_parallelism,
            row.kdf_salt,
            row.wrap_alg,
            row.active_term,
        )
        if not (
            CHEAPEST.ops <= meta.kdf_opslimit <= CEILING.ops
            and CHEAPEST.mem <= meta.kdf_memlimit <= CEILING.mem
        ):
            raise VaultCorruptedError(
                "the vault's key-derivation cost is outside the accepted bounds"
            )
        if row.checksum != meta.checksum(nonce, wrapped):
            raise VaultCorruptedError("the vault's parameter row is damaged")
        return meta, nonce, wrapped

    def _install(self, meta: _Meta, kek: _Key, dek: _Key) -> None:
        self._wipe()
        self._meta, self._kek, self._dek = meta, kek, dek
        self._used = self._clock()
        if self._auto_lock is not None:
            self._arm(self._auto_lock)

    def _wipe(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in (self._kek, self._dek):
            if key is not None:
                key.wipe()
        self._kek = self._dek = self._meta = None

    def _keys(self) -> tuple[_Meta, _Key]:
        self._check_idle()
        if self._dek is None or self._meta is None:
            raise VaultLockedError
        self._used = self._clock()
        return self._meta, self._dek

    def _check_idle(self) -> None:
        if (
            self._auto_lock is not None
            and self._dek is not None
            and self._clock() - self._used >= self._auto_lock
        ):
            self._expire()

    def _arm(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            if self._dek is None or self._auto_lock is None:
                return
            idle = self._clock() - self._used
            if idle >= self._auto_lock:
                self._expire()
            else:
                self._arm(self._auto_lock - idle)

    def _expire(self) -> None:
        self._wipe()
        log.info("vault auto-locked after %s s idle", self._auto_lock)
        try:
            with self._store.transaction() as tx:
                _audit(tx, "vault.auto_lock", "", {"idle_s": self._auto_lock})
        except Exception:  # noqa: BLE001 - locking must not fail on a busy store
            log.warning("could not write the auto-lock audit row")

    @staticmethod
    def _decrypt(meta: _Meta, dek: _Key, sealed: SealedCredential) -> bytes:
        name = sealed.name
        if sealed.nonce is None or sealed.ct is None:
            raise VaultCorruptedError(f"credential {name!r} is damaged")
        if sealed.term != meta.active_term:
            raise VaultCorruptedError(f"credential {name!r} names an unknown key term")
        try:
            return _open(
                dek, sealed.nonce, sealed.ct, meta.cred_aad(name, sealed.provider, sealed.term)
            )
        except nacl.exceptions.CryptoError:
            raise VaultCorruptedError(
                f"credential {name!r} failed authentication (altered or moved)"
            ) from None

    def _key_buffers(self) -> Iterator[_Key]:
        """The live key buffers (white-box tests of :meth:`lock`)."""
        yield from (k for k in (self._kek, self._dek) if k is not None)


def _fill_random(key: _Key) -> None:
    if _lib is not None:
        _lib.randombytes(key.buf, KEY_BYTES)
    else:
        key.buf[:] = nacl.utils.random(KEY_BYTES)


@contextlib.contextmanager
def _wiped_on_error(*keys: _Key) -> Iterator[None]:
    """Zero ``keys`` if the block fails (they were never installed)."""
    try:
        yield
    except BaseException:
        for key in keys:
            key.wipe()
        raise


def _stored(meta: _Meta, nonce: bytes, wrapped: bytes, now: float) -> VaultMeta:
    """The parameter row for ``meta``, whose active key is ``wrapped``."""
    return VaultMeta(**attrs.asdict(meta), created_at=now, checksum=meta.checksum(nonce, wrapped))


def _audit(tx: StoreTransaction, action: str, target: str, detail: dict[str, Any]) -> None:
    tx.audit(action, target, json.dumps(detail, sort_keys=True), at=time.time())


@attrs.frozen
class VaultKeySource:
    """A provider's key sealed in ``vault`` under ``name``: decrypted per request, never cached."""

    vault: Vault = attrs.field(repr=False, eq=False)
    name: str

    def resolve(self, provider: str) -> Secret:  # noqa: ARG002 - the KeySource signature
        """Decrypt the key now; raises ``VaultLockedError`` while the vault is locked."""
        return self.vault.get(self.name)
