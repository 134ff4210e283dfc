"""The :class:`Secret` value: a credential that does not show itself."""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["Secret"]

_KEY: list[bytes] = []  # the process's random key for digests, made on first use


def _digest(value: str) -> bytes:
    import hashlib  # noqa: PLC0415 - slow to import and rarely needed

    if not _KEY:
        import os  # noqa: PLC0415

        _KEY.append(os.urandom(32))
    # Keyed, so that a hash seen outside (a dict's order, a timing) says nothing of the value.
    data = value.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, key=_KEY[0], digest_size=16).digest()


class Secret:
    """A credential whose ``repr``, ``str`` and format show only a mask.

    The value is revealed only by :meth:`reveal`, called where the HTTP header
    is built. Secrets compare in constant time, hash by a keyed digest of their
    value (so a set of them finds one in O(1)) and refuse to be pickled.
    """

    __slots__ = ("_digest", "_value")

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value
        self._digest: bytes | None = None

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value leaves the process."""
        return self._value

    def _keyed(self) -> bytes:
        d = self._digest
        if d is None:
            d = self._digest = _digest(self._value)
        return d

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __format__(self, spec: str) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hmac  # noqa: PLC0415 - rarely needed

        # Digests have one length, so the comparison does not leak the values' lengths either.
        return hmac.compare_digest(self._keyed(), other._keyed())

    def __hash__(self) -> int:
        return int.from_bytes(self._keyed()[:8], "little")

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values cannot be pickled")

    def __getstate__(self) -> Any:
        raise TypeError("Secret values cannot be pickled")
