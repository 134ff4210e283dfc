"""How tests/data/store-v1.db was made (run once, with the first release's tokenhub).

The file is checked in and must open with every later version: do not regenerate
it after a release; add a new golden file for a new format instead. It holds a
vault (password "correct horse battery staple"), a stored config, request logs,
spend and audit rows.
"""

from __future__ import annotations

import time
from pathlib import Path

from tokenhub._control import ControlPlane
from tokenhub._ledger import RequestLog
from tokenhub._store import Store
from tokenhub._vault import Vault
from tokenhub.testing import insecure_vault_kdf

CONFIG = {
    "providers": {
        "openai": {"kind": "openai", "api_key": {"vault": "openai"}},
        "local": {"kind": "vllm", "base_url": "http://127.0.0.1:8000/v1"},
    },
    "models": {
        "gpt-4o-mini": {"provider": "openai", "pricing": {"input": 0.15, "output": 0.6}},
        "llama-8b": {"provider": "local", "upstream": "meta-llama/Llama-3.1-8B-Instruct"},
    },
    "aliases": {"default": {"models": {"gpt-4o-mini": 3, "llama-8b": 1}}},
    "routing": {"mode": "cheap"},
    "budgets": [{"scope": "global", "period": "month", "usd": 100}],
}

path = Path(__file__).with_name("store-v1.db")
path.unlink(missing_ok=True)
with insecure_vault_kdf(), Store(path) as store:
    vault = Vault(store)
    vault.init("correct horse battery staple")
    vault.put("openai", "sk-golden-openai-0123456789abcdef", provider="openai")
    vault.put("anthropic", "sk-ant-golden-fedcba9876543210", provider="anthropic")
    vault.lock()
    ControlPlane(store).import_config(CONFIG)
    with store.transaction() as conn:
        conn.execute(
            "INSERT INTO spend (scope, key, period, usd) VALUES ('global', '*', 'month:2026-11', 1.5)"
        )
log = RequestLog(str(path), busy_timeout=5, buffer=10, retention_days=None)
log.record({"request_id": "golden-1", "at": time.time(), "model": "gpt-4o-mini", "status": "ok"})
log.close()
