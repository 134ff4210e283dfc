"""Scripting the fake (queues, defaults, Reply validation) and what it records."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.testing.helpers import ANTHROPIC_PATH, OPENAI_PATH, an, oa
from tokenhub.testing import FakeProvider, RecordedRequest, Reply


class TestScripting:
    @pytest.mark.anyio
    async def test_fifo_then_default_then_echo(self) -> None:
        """Scripted replies pop in order, then the model default, then the global echo."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("gpt", Reply(text="1"), Reply(status=500))
            fake.script("gpt", Reply(text="3"))
            statuses, texts = [], []
            for _ in range(3):
                response = await client.post(OPENAI_PATH, json=oa())
                statuses.append(response.status_code)
                texts.append(
                    response.json().get("choices", [{}])[0].get("message", {}).get("content")
                )
            echo = (await client.post(OPENAI_PATH, json=oa(text="yo"))).json()
            fake.default("gpt", Reply(text="always"))
            after = [(await client.post(OPENAI_PATH, json=oa())).json() for _ in range(2)]
        assert statuses == [200, 500, 200]
        assert [texts[0], texts[2]] == ["1", "3"]
        assert echo["choices"][0]["message"]["content"] == "echo: yo"
        assert [a["choices"][0]["message"]["content"] for a in after] == ["always", "always"]

    @pytest.mark.anyio
    async def test_queues_are_per_model_and_global_default(self) -> None:
        """Each model has its own queue; default(None, ...) covers every other model."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.script("a", Reply(text="for a"))
            fake.default(None, Reply(status=503))
            b = await client.post(OPENAI_PATH, json=oa("b"))
            a = await client.post(OPENAI_PATH, json=oa("a"))
            a_again = await client.post(OPENAI_PATH, json=oa("a"))
        assert b.status_code == 503
        assert a.json()["choices"][0]["message"]["content"] == "for a"
        assert a_again.status_code == 503

    @pytest.mark.anyio
    async def test_clear_forgets_requests_scripts_and_defaults(self) -> None:
        """clear() drops recorded requests, queued replies and defaults."""
        async with (
            FakeProvider(models=["seed"]) as fake,
            httpx.AsyncClient(base_url=fake.url) as client,
        ):
            fake.script("gpt", Reply(status=500))
            fake.default("gpt", Reply(status=500))
            await client.post(OPENAI_PATH, json=oa("other"))
            fake.clear()
            assert fake.requests == []
            response = await client.post(OPENAI_PATH, json=oa())
            listing = (await client.get("/v1/models")).json()
        assert response.status_code == 200
        assert [m["id"] for m in listing["data"]] == ["seed"]
        assert len(fake.requests) == 2

    def test_reply_validation(self) -> None:
        """Reply.chunks and ping_every must be at least 1, cut_tail_after 0; Reply is frozen."""
        with pytest.raises(ValueError, match="chunks"):
            Reply(chunks=0)
        with pytest.raises(ValueError, match="cut_tail_after"):
            Reply(cut_tail_after=-1)
        with pytest.raises(ValueError, match="ping_every"):
            Reply(ping_every=0)
        with pytest.raises(AttributeError):
            Reply().text = "x"  # type: ignore[misc]


class TestRecording:
    @pytest.mark.anyio
    async def test_records_everything(self) -> None:
        """Method, path, api, model, headers, bodies, stream flag and clock time are kept."""
        ticks = iter([10.0, 20.0])
        async with (
            FakeProvider(clock=lambda: next(ticks)) as fake,
            httpx.AsyncClient(base_url=fake.url) as client,
        ):
            fake.script("gpt", Reply(status=500))
            await client.post(
                OPENAI_PATH + "?x=1",
                json=oa(),
                headers={"X-Custom": "A", "Authorization": "Bearer s"},
            )
            await client.post(ANTHROPIC_PATH, json=an(stream=True))
        first, second = fake.requests
        assert isinstance(first, RecordedRequest)
        assert (first.method, first.path, first.api, first.model) == (
            "POST",
            OPENAI_PATH,
            "openai",
            "gpt",
        )
        assert first.headers["x-custom"] == "A"
        assert first.headers["authorization"] == "Bearer s"
        assert first.body == oa()
        assert json.loads(first.raw_body) == oa()
        assert (first.stream, first.time) == (False, 10.0)
        assert (second.api, second.model, second.stream, second.time) == (
            "anthropic",
            "claude",
            True,
            20.0,
        )
        assert fake.requests_for("claude") == [second]

    @pytest.mark.anyio
    async def test_non_json_body_is_400(self) -> None:
        """A non-JSON body gets a 400 JSON error and is recorded with body None."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            oa_response = await client.post(OPENAI_PATH, content=b"{nope")
            an_response = await client.post(ANTHROPIC_PATH, content=b"[]")
        assert oa_response.status_code == 400
        assert oa_response.json()["error"]["type"] == "invalid_request_error"
        assert an_response.status_code == 400
        assert an_response.json()["error"]["type"] == "invalid_request_error"
        assert [(r.body, r.raw_body, r.model) for r in fake.requests] == [
            (None, b"{nope", None),
            ([], b"[]", None),
        ]

    @pytest.mark.anyio
    async def test_missing_fields_are_400(self) -> None:
        """Requests without model, messages or (Anthropic) max_tokens are rejected."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            fake.default(None, Reply(text="never"))
            no_model = await client.post(OPENAI_PATH, json={"messages": []})
            no_messages = await client.post(OPENAI_PATH, json={"model": "gpt"})
            body = an()
            del body["max_tokens"]
            no_max = await client.post(ANTHROPIC_PATH, json=body)
        assert [r.status_code for r in (no_model, no_messages, no_max)] == [400, 400, 400]
        assert "max_tokens" in no_max.json()["error"]["message"]

    @pytest.mark.anyio
    async def test_unknown_path_is_404(self) -> None:
        """Unknown paths get a 404 JSON error and are recorded as api 'unknown'."""
        async with FakeProvider() as fake, httpx.AsyncClient(base_url=fake.url) as client:
            response = await client.post("/v1/embeddings", json={"model": "gpt"})
            wrong_method = await client.get(OPENAI_PATH)
        assert response.status_code == 404
        assert "Unknown request URL" in response.json()["error"]["message"]
        assert wrong_method.status_code == 404
        assert [r.api for r in fake.requests] == ["unknown", "unknown"]
        assert fake.requests[0].model == "gpt"
