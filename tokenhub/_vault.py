"""The credential vault's lifecycle: init, unlock, lock, auto-lock, credentials, rekey, rotation.

Key hierarchy: password → Argon2id (libsodium, parameters stored per vault) →
key-encryption key (KEK) → wraps a random data key (DEK, one per *term*) →
the DEK seals each credential with a fresh 24-byte nonce and associated data
binding the vault id, the credential's name and provider, and the term. The
primitives and the associated data are in :mod:`tokenhub._crypto`; the rows go
through the store protocol (:class:`~tokenhub._storage.StoreBackend`).

The AEAD unwrap of the DEK is the password check. Another process (or Vault) may
rotate the key or change the password at any time: every write re-reads the
stored key state inside its transaction (:meth:`Vault._sync`) and ``unlock``
re-reads it after the KDF, so nothing is ever written under a retired term or
salt. KEK and DEK are zeroed on :meth:`Vault.lock`. What Python cannot wipe:
``str`` passwords, and the decrypted keys handed to the HTTP layer as ``str``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import nacl.exceptions
import nacl.utils

from tokenhub._crypto import (
    CEILING,
    CHEAPEST,
    FORMAT_VERSION,
    KDF_ALG,
    PROFILES,
    SALT_BYTES,
    WRAP_ALG,
    Header,
    KdfParams,
    Key,
    as_password,
    check_new_password,
    derive,
    nfc,
    random_key,
    seal,
    unseal,
    warn_without_buffers,
    zero,
)
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

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tokenhub._storage import StoreBackend, StoreReader, StoreTransaction

__all__ = ["CHEAPEST", "PROFILES", "KdfParams", "Vault", "VaultKeySource"]

log = get_logger("tokenhub.vault")

#: Why a vault locks itself when another process or Vault moved the key state under it.
CHANGED = "the vault's password was changed elsewhere since it was unlocked here; unlock again"
#: How often :meth:`Vault.unlock` derives again when the password changes while it derives.
UNLOCK_ATTEMPTS = 3

#: The testing switch (:func:`tokenhub.testing.insecure_vault_kdf` pushes :data:`CHEAPEST`).
_testing: list[KdfParams] = []


def testing_kdf() -> KdfParams | None:
    """The parameters forced by the testing switch, if it is on."""
    return _testing[-1] if _testing else None


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
        warn_without_buffers()
        self._store = store
        self._auto_lock = auto_lock
        self._clock = clock
        self._lock = threading.RLock()
        self._kek: Key | None = None
        self._dek: Key | None = None
        self._meta: Header | None = None
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
        """Create the vault with a new password (NFC-normalised) and leave it unlocked.

        The password must not be empty nor contain a line break (the command line
        could never read it back).
        """
        params = self._params(kdf)
        pw = as_password(password)
        del password  # tracebacks rendered with locals must not show it
        norm = nfc(pw)
        try:
            check_new_password(pw)
            if self.initialized:
                raise VaultError("the store already holds a vault")
            salt = nacl.utils.random(SALT_BYTES)
            meta = Header(
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
            kek = derive(pw if norm is None else norm, salt, params)
        finally:
            zero(pw)
            if norm is not None:
                zero(norm)
        dek = random_key()
        nonce, wrapped = seal(kek, dek, meta.wrap_aad(1))
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

        The password's NFC form is tried first, then the bytes as given (a vault
        created before passwords were normalised). The key state is read again
        after the KDF ran: a rotation committed meanwhile (by this Vault's other
        threads or another process) is what gets installed, and a password
        changed meanwhile means deriving again.

        Raises :class:`~tokenhub.errors.VaultUnlockError` (one generic message)
        on a wrong password, changing nothing (a locked vault stays locked);
        :class:`~tokenhub.errors.VaultCorruptedError` when the stored parameter
        row is damaged or its cost is out of bounds (checked before the KDF runs).
        """
        pw = as_password(password)
        del password  # tracebacks rendered with locals must not show it
        norm = nfc(pw)
        forms = [pw] if norm is None else [norm, pw]
        try:
            for _ in range(UNLOCK_ATTEMPTS):
                meta, nonce, wrapped = self._load()
                kek = self._open(forms, meta, nonce, wrapped)
                with self._lock, _wiped_on_error(kek):
                    with self._store.reading() as reader:
                        now, nonce, wrapped = _current(reader)
                    if _kdf_inputs(now) != _kdf_inputs(meta):
                        kek.wipe()  # the password changed while the KDF ran: derive again
                        continue
                    dek = Key()
                    try:
                        unseal(kek, nonce, wrapped, now.wrap_aad(now.active_term), into=dek)
                    except nacl.exceptions.CryptoError:
                        dek.wipe()
                        log.warning("vault unlock failed")
                        raise VaultUnlockError from None
                    self._install(now, kek, dek)
                log.info("vault unlocked")
                return
        finally:
            for form in forms:
                zero(form)
        raise VaultError("the vault's password kept changing while unlocking; try again")

    @staticmethod
    def _open(forms: list[bytearray], meta: Header, nonce: bytes, wrapped: bytes) -> Key:
        """The KEK of the first password form that unwraps ``wrapped``; else VaultUnlockError."""
        probe = Key()
        try:
            for form in forms:
                kek = derive(form, meta.kdf_salt, meta.params)
                try:
                    unseal(kek, nonce, wrapped, meta.wrap_aad(meta.active_term), into=probe)
                except nacl.exceptions.CryptoError:
                    kek.wipe()
                    continue
                return kek
        finally:
            probe.wipe()
        log.warning("vault unlock failed")
        raise VaultUnlockError from None

    def lock(self) -> None:
        """Zero the key buffers and lock. Idempotent."""
        with self._lock:
            self._wipe()
        log.info("vault locked")

    def change_password(
        self, new_password: str | bytes | bytearray, *, kdf: str | KdfParams | None = None
    ) -> None:
        """Re-wrap the data key under a new password (and a new salt); credentials are untouched.

        The vault must be unlocked. The new password is NFC-normalised and must
        not be empty nor contain a line break. The stored key state is re-read in
        the write transaction (another process may have rotated the key: its
        term is what gets re-wrapped). The parameter row and the wrapped key
        change in one transaction; the store is checkpointed afterwards, so the
        old wrapped key does not linger in ``-wal``.
        """
        pw = as_password(new_password)
        del new_password  # tracebacks rendered with locals must not show it
        norm = nfc(pw)
        try:
            check_new_password(pw)
            with self._lock:
                self._keys()
                if kdf is None:
                    with self._store.reading() as reader:
                        params = _current(reader)[0].params
                else:
                    params = self._params(kdf)
                salt = nacl.utils.random(SALT_BYTES)
                kek = derive(pw if norm is None else norm, salt, params)
                now = time.time()
                with _wiped_on_error(kek), self._store.transaction() as tx:
                    meta, dek = self._sync(tx)
                    new = attrs.evolve(meta, kdf_salt=salt, kdf_opslimit=params.ops)
                    new = attrs.evolve(new, kdf_memlimit=params.mem)
                    term = meta.active_term
                    nonce, wrapped = seal(kek, dek, new.wrap_aad(term))
                    old = tx.vault_key(term) or WrappedKey(term, None, None, now)
                    tx.set_vault_meta(_stored(new, nonce, wrapped, now))
                    tx.put_vault_key(attrs.evolve(old, wrap_nonce=nonce, wrapped_dek=wrapped))
                    _audit(tx, "vault.passwd", "", {"kdf": attrs.asdict(params)})
                assert self._kek is not None  # noqa: S101 - _sync() checked
                self._kek.wipe()
                self._kek, self._meta = kek, new
        finally:
            zero(pw)
            if norm is not None:
                zero(norm)
        self._store.checkpoint()

    def rotate_key(self) -> int:
        """Start a new data-key term, re-encrypt every credential under it, retire the old key.

        One transaction, which first re-reads the stored key state: a rotation
        committed elsewhere is followed (the new term is the stored one plus one);
        a password changed elsewhere locks this vault
        (:class:`~tokenhub.errors.VaultLockedError`: its key no longer wraps).
        The store is checkpointed afterwards. Returns the new term.
        """
        with self._lock:
            self._keys()
            dek = random_key()
            now = time.time()
            with _wiped_on_error(dek), self._store.transaction() as tx:
                meta, old = self._sync(tx, kek=True)
                assert self._kek is not None  # noqa: S101 - _sync() checked
                term = meta.active_term + 1
                new_meta = attrs.evolve(meta, active_term=term)
                nonce, wrapped = seal(self._kek, dek, new_meta.wrap_aad(term))
                rows = tx.vault_meta()
                credentials = tx.credentials()
                for c in credentials:
                    plain = self._decrypt(meta, old, c)
                    n2, ct2 = seal(dek, plain, new_meta.cred_aad(c.name, c.provider, term))
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
            self._keys()
            now = time.time()
            with self._store.transaction() as tx:
                meta, dek = self._sync(tx)  # the active term now, not the one cached at unlock
                term = meta.active_term
                aad = meta.cred_aad(name, provider, term)
                nonce, ct = seal(dek, secret.reveal().encode(), aad)
                existing = tx.credential(name)
                created = existing.created_at if existing is not None else now
                tx.put_credential(SealedCredential(name, provider, term, nonce, ct, created, now))
                _audit(tx, "vault.put" if existing is None else "vault.update", name, {})

    def get(self, name: str) -> Secret:
        """Decrypt the credential ``name`` now; nothing is cached.

        A credential sealed under a newer term than this Vault's (another process
        rotated the key) makes it read that term's key from the same snapshot.

        Raises :class:`~tokenhub.errors.VaultLockedError`,
        :class:`~tokenhub.errors.CredentialError` when there is no such
        credential, or :class:`~tokenhub.errors.VaultCorruptedError`.
        """
        with self._lock:
            meta, dek = self._keys()
            with self._store.reading() as reader:
                sealed = reader.credential(name)
                if sealed is not None and sealed.term != meta.active_term:
                    meta, dek = self._sync(reader)
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
                self._sync(tx)
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

    def _load(self) -> tuple[Header, bytes, bytes]:
        """Read and check the stored parameters; never runs the KDF."""
        with self._store.reading() as reader:
            return _current(reader)

    def _sync(self, reader: StoreReader, *, kek: bool = False) -> tuple[Header, Key]:
        """The header and data key of the stored active term (under ``_lock``, in a store block).

        Another process (or Vault) may have rotated the key or changed the
        password since this one unlocked. A term that moved is unwrapped with the
        cached KEK; if that fails (the password changed too) this vault locks and
        raises :class:`~tokenhub.errors.VaultLockedError`. ``kek=True`` also
        proves that the cached KEK still wraps the active key (what
        :meth:`rotate_key` needs).
        """
        meta, dek = self._keys()
        stored, nonce, wrapped = _current(reader)
        if stored.vault_id != meta.vault_id:
            self._wipe()
            raise VaultLockedError("the store holds another vault now; unlock again")
        if stored.active_term == meta.active_term and not kek:
            return meta, dek
        assert self._kek is not None  # noqa: S101 - _keys() checked
        fresh = Key()
        try:
            unseal(self._kek, nonce, wrapped, stored.wrap_aad(stored.active_term), into=fresh)
        except nacl.exceptions.CryptoError:
            fresh.wipe()
            self._wipe()
            log.warning("vault locked: its password was changed elsewhere")
            raise VaultLockedError(CHANGED) from None
        dek.wipe()
        self._dek, self._meta = fresh, stored
        return stored, fresh

    def _install(self, meta: Header, kek: Key, dek: Key) -> None:
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

    def _keys(self) -> tuple[Header, Key]:
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
    def _decrypt(meta: Header, dek: Key, sealed: SealedCredential) -> bytes:
        name = sealed.name
        if not isinstance(name, str):
            raise VaultCorruptedError("a credential row is damaged: its name is not text")
        if not isinstance(sealed.provider, str):
            raise VaultCorruptedError(f"credential {name!r} is damaged: its provider is not text")
        if sealed.nonce is None or sealed.ct is None:
            raise VaultCorruptedError(f"credential {name!r} is damaged")
        if sealed.term != meta.active_term:
            raise VaultCorruptedError(f"credential {name!r} names an unknown key term")
        try:
            return unseal(
                dek, sealed.nonce, sealed.ct, meta.cred_aad(name, sealed.provider, sealed.term)
            )
        except nacl.exceptions.CryptoError:
            raise VaultCorruptedError(
                f"credential {name!r} failed authentication (altered or moved)"
            ) from None

    def _key_buffers(self) -> Iterator[Key]:
        """The live key buffers (white-box tests of :meth:`lock`)."""
        yield from (k for k in (self._kek, self._dek) if k is not None)


@contextlib.contextmanager
def _wiped_on_error(*keys: Key) -> Iterator[None]:
    """Zero ``keys`` if the block fails (they were never installed)."""
    try:
        yield
    except BaseException:
        for key in keys:
            key.wipe()
        raise


_INT_COLUMNS = ("format_version", "kdf_opslimit", "kdf_memlimit", "kdf_parallelism", "active_term")


def _current(reader: StoreReader) -> tuple[Header, bytes, bytes]:
    """The stored header and active wrapped key, checked; every damage is VaultCorruptedError."""
    rows = reader.vault_meta()
    if not rows:
        raise VaultError("the store holds no vault; create one with `tokenhub vault init`")
    if len(rows) != 1:
        raise VaultCorruptedError("the vault has more than one parameter row")
    row = rows[0]
    if row.vault_id is None or len(row.vault_id) != 16:
        raise VaultCorruptedError("the vault's parameter row is damaged: bad vault_id")
    for column in _INT_COLUMNS:
        value = getattr(row, column)
        if type(value) is not int:  # SQLite columns hold any type; bool is no count either
            raise VaultCorruptedError(f"the vault's parameter row is damaged: bad {column}")
    key = reader.vault_key(row.active_term)
    nonce, wrapped = (key.wrap_nonce, key.wrapped_dek) if key is not None else (None, None)
    if nonce is None or wrapped is None:
        raise VaultCorruptedError("the vault's active key is missing")
    if (
        row.format_version != FORMAT_VERSION
        or row.kdf_alg != KDF_ALG
        or row.wrap_alg != WRAP_ALG
        or row.kdf_parallelism != 1
        or row.kdf_salt is None
        or len(row.kdf_salt) != SALT_BYTES
    ):
        raise VaultCorruptedError("the vault's parameters are not ones tokenhub writes")
    meta = Header(
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
        raise VaultCorruptedError("the vault's key-derivation cost is outside the accepted bounds")
    if row.checksum != meta.checksum(nonce, wrapped):
        raise VaultCorruptedError("the vault's parameter row is damaged")
    return meta, nonce, wrapped


def _kdf_inputs(meta: Header) -> tuple[bytes, bytes, int, int]:
    """What the KEK derives from, besides the password."""
    return meta.vault_id, meta.kdf_salt, meta.kdf_opslimit, meta.kdf_memlimit


def _stored(meta: Header, nonce: bytes, wrapped: bytes, now: float) -> VaultMeta:
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
