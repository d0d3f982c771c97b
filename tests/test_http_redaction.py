"""Secrets in URLs never reach a log line (issue 10 item 10): ``redact_url``, and hostd's own
request log against a real upstream."""

from __future__ import annotations

import pytest

from hostd.upstream.http_client import redact_url
from tests.support.hostd_proc import HostdProcess
from tests.support.upstream import Upstream

pytestmark = pytest.mark.anyio

SECRET = "s3cr3tVALUE"


@pytest.mark.parametrize(
    "key",
    [
        "sig",
        "Signature",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Signature",
        "auth",
        "pwd",
        "key",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "client_secret",
        "password",
        "id_token",
        "session_id",
    ],
)
def test_secret_query_values_are_redacted(key: str) -> None:
    redacted = redact_url(f"https://h.example/p?keep=1&{key}={SECRET}&other=two")
    assert SECRET not in redacted
    assert f"{key}=[redacted]" in redacted
    assert "keep=1" in redacted and "other=two" in redacted  # the rest stays readable


def test_userinfo_and_fragment_are_dropped() -> None:
    redacted = redact_url(f"https://user:{SECRET}@h.example:8443/path#frag-{SECRET}")
    assert redacted == "https://h.example:8443/path"


def test_telegram_style_bot_tokens_in_the_path_are_redacted() -> None:
    url = "https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage"
    assert redact_url(url) == "https://api.telegram.org/bot[redacted]/sendMessage"


def test_long_opaque_path_segments_are_redacted_and_words_are_kept() -> None:
    url = "https://hooks.example/services/T0123ABCD/B0456EFGH/x9f8e7d6c5b4a3z2y1x0w9v8u7t6s5r4q/api/v1/messages"
    redacted = redact_url(url)
    assert "x9f8e7d6c5b4a3z2y1x0w9v8u7t6s5r4q" not in redacted
    assert redacted.endswith("/[redacted]/api/v1/messages")
    words = "https://h.example/v1/chat/completions/some-quite-long-path-segment-words"
    assert redact_url(words) == words


def test_opaque_values_under_innocent_keys_are_redacted() -> None:
    value = "ya29.A0ARrdaM8x7Qk2LmN4pQ9rS1tU3vW5xY7z"
    assert value not in redact_url(f"https://h.example/?q={value}")
    assert redact_url("https://h.example/?q=hello&page=2") == "https://h.example/?q=hello&page=2"


def test_a_url_that_does_not_parse_is_redacted_whole() -> None:
    assert redact_url(f"http://[{SECRET}/") == "[redacted]"


async def test_hostds_request_log_carries_no_secret(hostd: HostdProcess, upstream: Upstream) -> None:
    url = f"{upstream.url}/bot42:{SECRET}abcdef/x?X-Amz-Signature={SECRET}&sig={SECRET}&page=1".replace(
        "http://", f"http://u:{SECRET}@"
    )
    async with await hostd.connect() as c:
        await c.call("host.http.do", {"url": url}, timeout=10)
    line = await hostd.wait_log('"msg":"http request"')
    assert "page=1" in line  # the line is there, and readable
    assert not any(SECRET in logged for logged in hostd.stderr_lines)
