"""The :class:`Secret` value: a credential that does not show itself."""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["Secret"]


class Secret:
    """A credential whose ``repr``, ``str`` and format show only a mask.

    The value is revealed only by :meth:`reveal`, called where the HTTP header
    is built. Secrets compare in constant time and refuse to be pickled.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """Return the secret value. Call it only where the value leaves the process."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __str__(self) -> str:
        return "**********"

    def __format__(self, spec: str) -> str:
        return "**********"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        import hashlib  # noqa: PLC0415 - slow to import and rarely needed
        import hmac  # noqa: PLC0415

        # Digests have one length, so the comparison does not leak the values' lengths either.
        mine = hashlib.sha256(self._value.encode()).digest()
        theirs = hashlib.sha256(other._value.encode()).digest()
        return hmac.compare_digest(mine, theirs)

    def __hash__(self) -> int:
        return hash(Secret)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret values cannot be pickled")

    def __getstate__(self) -> Any:
        raise TypeError("Secret values cannot be pickled")
