"""The switch that makes vaults cheap to create in tests."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["insecure_vault_kdf"]


@contextlib.contextmanager
def insecure_vault_kdf() -> Iterator[None]:
    """Create vaults with libsodium's cheapest Argon2id cost (1 pass over 8 KiB): tests only.

    Inside the block, :meth:`Vault.init` and :meth:`Vault.change_password`
    ignore the requested cost so that a test suite can create hundreds of
    vaults in milliseconds. A vault made this way is protected by almost
    nothing: never use it outside tests. Process-wide; not thread-local.
    """
    from tokenhub import _vault  # noqa: PLC0415 - PyNaCl loads only with a vault

    _vault._testing.append(_vault.CHEAPEST)  # noqa: SLF001 - the switch lives with the vault
    try:
        yield
    finally:
        _vault._testing.pop()  # noqa: SLF001
