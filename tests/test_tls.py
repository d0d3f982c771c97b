"""HTTPS through host.http.*: TLS is negotiated with the URL's host name (SNI and certificate
check) while the socket goes to the address the egress policy checked."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hostd.client import RpcError
from tests.support.helpers import self_signed_certificate
from tests.support.hostd_proc import running_hostd

pytestmark = pytest.mark.anyio


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = self_signed_certificate(tmp_path)
    return cert, key


@pytest.fixture
async def tls_server(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[int, list[str]]]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server_names: list[str] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        server_names.append(name or "")

    context.sni_callback = record_sni  # type: ignore[assignment]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nsecure")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], server_names
    finally:
        server.close()


async def test_https_with_a_trusted_ca(
    short_tmp: Path, certificate: tuple[Path, Path], tls_server: tuple[int, list[str]]
) -> None:
    port, server_names = tls_server
    config = short_tmp / "hostd.toml"
    config.write_text(f'[http]\nca_file = "{certificate[0]}"\n')
    async with running_hostd(short_tmp, "--config", str(config)) as hp, await hp.connect() as c:
        result = await c.call("host.http.do", {"url": f"https://localhost:{port}/"}, timeout=10)
    assert result["StatusCode"] == 200
    assert base64.b64decode(result["Body"]) == b"secure"
    assert server_names == ["localhost"]


async def test_https_with_an_untrusted_certificate_fails(short_tmp: Path, tls_server: tuple[int, list[str]]) -> None:
    port, _ = tls_server
    async with running_hostd(short_tmp) as hp, await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": f"https://localhost:{port}/"}, timeout=10)
    assert e.value.message.startswith("execute host http request: ")
    assert "CERTIFICATE_VERIFY_FAILED" in e.value.message
