"""The vault's cryptography: Argon2id key derivation, XChaCha20-Poly1305 sealing, wipeable keys.

Pure functions over key buffers; nothing here touches the store. Keys live in
cffi buffers that :meth:`Key.wipe` zeroes (through PyNaCl's private
``nacl._sodium``; without it, in ``bytearray`` copies, with a warning).
:class:`Header` fixes the associated data that binds every wrapped key and
sealed credential to its vault, parameters, name and term.
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from typing import Any, Final

import attrs
import nacl.bindings
import nacl.exceptions
import nacl.utils

from tokenhub._redact import get_logger
from tokenhub.errors import ConfigError, VaultError

__all__ = [
    "CEILING",
    "CHEAPEST",
    "FLOOR",
    "FORMAT_VERSION",
    "KDF_ALG",
    "PROFILES",
    "SALT_BYTES",
    "WRAP_ALG",
    "Header",
    "KdfParams",
    "Key",
    "as_password",
    "check_new_password",
    "derive",
    "fields",
    "nfc",
    "random_key",
    "seal",
    "unseal",
    "warn_without_buffers",
    "zero",
]

log = get_logger("tokenhub.vault")

try:  # the private cffi bindings let keys live in buffers we can zero
    from nacl import _sodium
except ImportError:  # pragma: no cover - depends on the PyNaCl build
    _sodium = None
_ffi: Any = getattr(_sodium, "ffi", None)
_lib: Any = getattr(_sodium, "lib", None)
_warned = False


def warn_without_buffers() -> None:
    """Warn once per process when keys cannot live in wipeable buffers."""
    global _warned  # noqa: PLW0603 - warn once per process
    if _lib is None and not _warned:
        _warned = True
        log.warning("PyNaCl's nacl._sodium is missing: vault keys live in bytearrays")


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


# -- key material ------------------------------------------------------------------


class Key:
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
        """Zero the key in place (and unlock its pages)."""
        if _lib is not None:
            _lib.sodium_memzero(self.buf, KEY_BYTES)
            _lib.sodium_munlock(self.buf, KEY_BYTES)
        else:
            self.buf[:] = bytes(KEY_BYTES)

    def zeroed(self) -> bool:
        """Whether every byte is zero (for tests of ``Vault.lock``)."""
        data = bytes(_ffi.buffer(self.buf)) if _lib is not None else bytes(self.buf)
        return data == bytes(KEY_BYTES)


def derive(password: bytearray, salt: bytes, params: KdfParams) -> Key:
    """Argon2id (libsodium, one lane) of ``password`` into a new key buffer."""
    key = Key()
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


def seal(key: Key, message: bytes | Key, aad: bytes) -> tuple[bytes, bytes]:
    """Encrypt with a fresh random nonce; return ``(nonce, ciphertext‖tag)``.

    A ``Key`` message (wrapping a DEK) is read from its buffer, never copied to ``bytes``.
    """
    nonce = nacl.utils.random(NONCE_BYTES)
    if _lib is not None:
        size = KEY_BYTES if isinstance(message, Key) else len(message)
        data = message.buf if isinstance(message, Key) else message
        out = _ffi.new("unsigned char[]", size + 16)
        n = _ffi.new("unsigned long long *")
        _lib.crypto_aead_xchacha20poly1305_ietf_encrypt(
            out, n, data, size, aad, len(aad), _ffi.NULL, nonce, key.buf
        )
        return nonce, bytes(_ffi.buffer(out, n[0]))
    plain = bytes(message.buf) if isinstance(message, Key) else message
    ct = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, aad, nonce, bytes(key.buf))
    return nonce, ct


def unseal(key: Key, nonce: bytes, ct: bytes, aad: bytes, into: Key | None = None) -> bytes:
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


def fields(*parts: bytes | str | int) -> bytes:
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


def as_password(password: str | bytes | bytearray) -> bytearray:
    """The password as a ``bytearray`` that :func:`zero` can wipe (a given one is used as is)."""
    if isinstance(password, bytearray):
        return password
    if isinstance(password, str):
        try:
            data = password.encode()
        except UnicodeEncodeError:  # a lone surrogate; the exception holds the password
            data = None
        if data is None:  # raised outside the handler: no __context__ to reach the password
            raise VaultError("a vault password must be valid Unicode text")
        return bytearray(data)
    if isinstance(password, bytes):
        return bytearray(password)
    raise TypeError("a password is str, bytes or bytearray")


def nfc(password: bytearray) -> bytearray | None:
    """The NFC form of a UTF-8 password when it differs from it, else ``None``.

    ASCII is always NFC, so an ASCII password never passes through a ``str``;
    bytes that are not UTF-8 are used exactly as given.
    """
    if password.isascii():
        return None
    try:
        text = password.decode()
    except UnicodeDecodeError:
        return None
    if unicodedata.is_normalized("NFC", text):
        return None
    return bytearray(unicodedata.normalize("NFC", text).encode())


def check_new_password(password: bytearray) -> None:
    """Refuse a new password that is empty or that the command line could never read back."""
    if not password:
        raise VaultError("the password is empty")
    if b"\n" in password or b"\r" in password:
        raise VaultError(
            "a vault password cannot contain a line break (CR or LF): "
            "`tokenhub` reads one line and drops a trailing line break"
        )


def zero(data: bytearray) -> None:
    """Overwrite ``data`` with zeros."""
    if _lib is not None and data:
        _lib.sodium_memzero(_ffi.from_buffer(data), len(data))
    else:
        data[:] = bytes(len(data))


@attrs.frozen
class Header:
    """A vault's identity and parameters, checked: what every associated data binds."""

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
        """The key-derivation cost."""
        return KdfParams(self.kdf_opslimit, self.kdf_memlimit)

    def wrap_aad(self, term: int) -> bytes:
        """The associated data of ``term``'s wrapped data key (binds every parameter)."""
        return b"tokenhub/v1/dek\x00" + fields(
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
        """The associated data of a sealed credential (binds vault, name, provider, term)."""
        return b"tokenhub/v1/cred\x00" + fields(self.vault_id, name, provider, term)

    def checksum(self, wrap_nonce: bytes, wrapped: bytes) -> bytes:
        """Detects a damaged row before the KDF runs (a forger can recompute it: not a MAC)."""
        return hashlib.blake2b(
            self.wrap_aad(self.active_term) + fields(wrap_nonce, wrapped), digest_size=32
        ).digest()


def random_key() -> Key:
    """A new key of random bytes, drawn straight into its buffer."""
    key = Key()
    if _lib is not None:
        _lib.randombytes(key.buf, KEY_BYTES)
    else:
        key.buf[:] = nacl.utils.random(KEY_BYTES)
    return key
