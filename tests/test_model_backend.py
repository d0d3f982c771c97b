"""The model backend on its own: ModelBackend against the fake proxy, and its small rules."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hostd.config import load_config
from hostd.errors import HostCallFailed, LimitExceeded
from hostd.logs import Logger
from hostd.upstream.model_backend import ModelBackend, ModelCall, endpoint_path, error_message
from tests.support.fake_proxy import FakeProxy, Json

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(proxy: FakeProxy) -> AsyncIterator[ModelBackend]:
    config = load_config(overrides={"model.base_url": proxy.url + "/", "http.max_body_bytes": 64}, environ={})
    logger = Logger("warn")
    model = ModelBackend(config, logger)
    try:
        yield model
    finally:
        await model.aclose()
        logger.flush()


def call(**overrides: object) -> ModelCall:
    fields: dict[str, object] = {
        "entry_protocol": "openai",
        "model": "gpt-test",
        "stream": False,
        "body": b'{"model":"gpt-test"}',
        "headers": None,
        "query": None,
        "plugin_id": "p",
        "session_id": "session-1",
    }
    fields.update(overrides)
    return ModelCall(**fields)  # type: ignore[arg-type]


async def test_an_answer_over_max_body_bytes_is_a_limit_error(backend: ModelBackend, proxy: FakeProxy) -> None:
    proxy.plan(Json(b"x" * 65))
    with pytest.raises(LimitExceeded) as e:
        await backend.execute(call())
    assert e.value.to_error()["code"] == -32001
    proxy.plan(Json(b"x" * 64))
    assert (await backend.execute(call())).body == b"x" * 64


async def test_base_url_trailing_slash_is_not_doubled(backend: ModelBackend, proxy: FakeProxy) -> None:
    proxy.plan(Json(b"{}"))
    await backend.execute(call())
    assert proxy.received[0].path == "/v1/chat/completions"


async def test_the_proxy_key_is_not_sent_when_none_is_configured(backend: ModelBackend, proxy: FakeProxy) -> None:
    proxy.plan(Json(b"{}"))
    await backend.execute(call(entry_protocol="claude"))
    names = proxy.received[0].header_names()
    assert not names & {"authorization", "x-api-key", "x-goog-api-key"}


async def test_an_error_body_is_read_and_the_connection_freed(backend: ModelBackend, proxy: FakeProxy) -> None:
    proxy.plan(Json(b'{"error": {"message": "quota exhausted", "type": "rate_limit"}}', 429), Json(b"{}"))
    with pytest.raises(HostCallFailed) as e:
        await backend.execute(call())
    assert (e.value.message, e.value.http_status, e.value.retryable) == ("quota exhausted", 429, None)
    assert (await backend.execute(call())).status_code == 200


def test_gemini_model_is_path_escaped() -> None:
    assert endpoint_path("gemini", "tuned/model a", False) == "/v1beta/models/tuned%2Fmodel%20a:generateContent"
    assert endpoint_path("gemini", "g", True) == "/v1beta/models/g:streamGenerateContent"
    assert endpoint_path("claude", "ignored", True) == "/v1/messages"


def test_error_text_is_cut_at_1_kib_without_breaking_a_character() -> None:
    body = ("a" * 1023 + "é" + "b" * 10).encode()
    assert error_message(500, body) == "a" * 1023
    assert error_message(500, b"caf\xe9 \xff down") == "caf\ufffd \ufffd down"  # not UTF-8: replaced


def test_error_message_prefers_a_non_blank_json_error_message() -> None:
    assert error_message(400, b'{"error": {"message": "  bad model  "}}') == "bad model"
    assert error_message(400, b'{"error": {"message": ""}}') == '{"error": {"message": ""}}'
    assert error_message(400, b'{"error": "flat string"}') == '{"error": "flat string"}'
    assert error_message(418, b"") == "model execution failed with status 418"
