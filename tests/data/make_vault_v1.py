"""How tests/data/vault-v1.db was made (run once, with the first release's tokenhub).

The file is checked in and must open with every later version: do not regenerate
it after a release; add a new golden file for a new format instead.
"""

from __future__ import annotations

from pathlib import Path

from tokenhub._store import Store
from tokenhub._vault import Vault
from tokenhub.testing import insecure_vault_kdf

path = Path(__file__).with_name("vault-v1.db")
path.unlink(missing_ok=True)
with insecure_vault_kdf(), Store(path) as store:
    vault = Vault(store)
    vault.init("correct horse battery staple")
    vault.put("openai", "sk-golden-openai-0123456789abcdef", provider="openai")
    vault.put("anthropic", "sk-ant-golden-fedcba9876543210", provider="anthropic")
    vault.lock()
