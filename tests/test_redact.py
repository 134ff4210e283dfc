"""Scrubbing secrets out of text, and the registry of known secrets."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import CANARY, config_for
from tokenhub import Hub
from tokenhub._redact import MASK, register, scrub
from tokenhub._secret import Secret
from tokenhub._store import Store
from tokenhub.testing import FakeProvider


def project_key() -> str:
    return "sk-proj-" + secrets.token_urlsafe(48)


class TestKeyShapesFirst:
    def test_another_project_key_is_masked_whole(self) -> None:
        """A second sk-proj- key is masked whole, though a registered key shares its prefix."""
        known, pasted = project_key(), project_key()
        register(Secret(known))
        out = scrub(f"my other key is {pasted} ok")
        assert f"my other key is {MASK} ok" == out
        assert pasted[8:] not in out
        assert pasted[-12:] not in out

    @pytest.mark.parametrize("prefix", ["sk-proj-", "sk-ant-api03-", "gsk_", "xai-"])
    def test_fragments_of_a_known_key_skip_the_shared_prefix(self, prefix: str) -> None:
        """A known key's echoed fragments are masked; the prefix all such keys share is not one."""
        known = prefix + secrets.token_hex(24)
        register(Secret(known))
        echoed = f"key {known[: len(prefix) + 8]}***** rejected"
        assert MASK in scrub(echoed)
        other = prefix + secrets.token_hex(24)
        assert "and [REDACTED]." == scrub(f"and {other}.")

    def test_overlapping_detectors_make_one_mask(self) -> None:
        """A known key that is also key-shaped, inside a bearer header, leaves no piece behind."""
        known = project_key() + ".tail9f"
        register(Secret(known))
        out = scrub(f"Authorization: Bearer {known} end")
        assert "Authorization: [REDACTED] end" == out

    @pytest.mark.anyio
    async def test_the_request_log_keeps_no_part_of_another_key(
        self, fake: FakeProvider, tmp_path: Path
    ) -> None:
        """With content logging on, a pasted project key is stored as one mask, no tail."""
        db = tmp_path / "hub.db"
        known, pasted = project_key(), project_key()
        cfg = config_for(fake)
        cfg["providers"]["openai"]["api_key"] = known
        cfg["store"] = {"path": str(db), "logs": {"enabled": True, "content": True}}
        async with Hub.from_config(cfg) as hub:
            await hub.chat([{"role": "user", "content": f"use {pasted} now"}], model="gpt-4o-mini")
        with Store(db) as s:
            (row,) = s.query("SELECT prompt, completion FROM request_logs")
        stored = f"{row['prompt']} {row['completion']}"
        assert pasted[8:20] not in stored
        assert pasted[-10:] not in stored
        assert known[8:20] not in stored
        assert MASK in stored


class TestRegistry:
    def test_equal_values_hash_alike_and_distinct_ones_differ(self) -> None:
        """Secrets hash by their value (a keyed digest), so sets find them in O(1)."""
        a, b = Secret(CANARY), Secret(CANARY)
        assert a == b
        assert hash(a) == hash(b)
        assert len({hash(Secret(f"key-{i}")) for i in range(100)}) == 100
        assert Secret("\ud800") == Secret("\ud800")  # a lone surrogate does not break it

    def test_registering_thousands_of_keys_is_fast(self) -> None:
        """3,000 keys register, and register again, in well under a second (was 7.9 s)."""
        keys = [f"gw-{secrets.token_hex(20)}" for _ in range(3000)]
        start = time.perf_counter()
        for k in keys:
            register(Secret(k))
        for k in keys:
            register(Secret(k))  # what each request does with its resolved key
        assert time.perf_counter() - start < 1.0
        assert keys[1234] not in scrub(f"x {keys[1234]} y")


_pieces = st.sampled_from(
    [" ", "x", "sk-proj-", "Bearer ", "***", "key=", "?key=", "\n", "日本", "gw-", "token"]
)


class TestIndexedScrub:
    @settings(max_examples=80, deadline=None)
    @given(
        keys=st.lists(st.text("abcdefgh0123456789-_", min_size=3, max_size=30), max_size=6),
        layout=st.lists(st.tuples(st.integers(0, 5), st.integers(-4, 4), _pieces), max_size=8),
    )
    def test_the_index_finds_what_the_search_finds(
        self, keys: list[str], layout: list[tuple[int, int, str]]
    ) -> None:
        """With many keys known, the one-pass index masks exactly what searching each key masks."""
        import tokenhub._redact as redact

        for k in keys:
            register(Secret(k))
        text = ""
        for which, cut, piece in layout:
            key = keys[which % len(keys)] if keys else ""
            text += (key[:cut] if cut < 0 else key[cut:]) + piece + key
        with pytest.MonkeyPatch.context() as m:
            m.setattr(redact, "_SCAN_LIMIT", 10**9)
            searched = scrub(text)
        with pytest.MonkeyPatch.context() as m:
            m.setattr(redact, "_SCAN_LIMIT", -1)
            indexed = scrub(text)
        assert searched == indexed


# These two run in this order: the first registers a provider's name as if it were a key (as
# a property test may: Hypothesis draws the code's own words), the second needs the name
# readable. conftest.py's autouse fixture forgets what each test registered.
class TestIsolation:
    def test_a_registers_a_word_of_a_config_path(self) -> None:
        """A registered word is masked where it stands alone, in a config path too."""
        register(Secret("openai"))
        assert f"providers.{MASK}.api_key" == scrub("providers.openai.api_key")

    def test_b_a_later_test_sees_the_word(self) -> None:
        """The secret registered by the test before is forgotten: the path reads in full."""
        assert "providers.openai.api_key" == scrub("providers.openai.api_key")
