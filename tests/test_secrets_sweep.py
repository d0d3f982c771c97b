"""Secrets sweep (issue 10): the scenarios a plugin drives every day, with known secret values
in every place a secret travels (API keys and bearer tokens in headers, credential JSON,
the proxy password in ``[http] proxy``, signed-URL query values and path tokens, secret
``host.log`` fields, the model key from ``HOSTD_MODEL_API_KEY``), run at ``--log-level
trace``. None of the values may appear (as is, or base64-encoded as bodies travel) in any
log line hostd writes, in any error message it answers, or in ``hostd.status``.

Each scenario also checks that the secret really went where it belongs (the upstream got
the header, the proxy got the key, the file holds the credential), so an empty log cannot
pass for a clean one.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.fake_proxy import FakeProxy
from tests.support.hostd_proc import HostdProcess, start_hostd
from tests.support.raw import RawConn
from tests.support.upstream import Request, Response, Upstream

pytestmark = pytest.mark.anyio

API_KEY = "sk-SWEEP-apikey-7f3a9c0e"
BEARER = "SWEEP-bearer-51be77d2"
GOOG_KEY = "SWEEP-goog-key-0c4d"
COOKIE = "SWEEP-cookie-sess-9a9a"
CRED_ACCESS = "SWEEP-cred-access-1f2e3d"
CRED_REFRESH = "SWEEP-cred-refresh-4c5b6a"
PROXY_PASSWORD = "SWEEP-proxypass-44c1"
AMZ_SIGNATURE = "SWEEP-amzsig-aa01bb02"
SIG = "SWEEP-sig-cc03dd04"
URL_TOKEN = "SWEEP-urltoken-ee05"
BOT_TOKEN = "123456:SWEEP-bot-ff06gg07hh08"
URL_PASSWORD = "SWEEP-urlpass-0909"
LOG_TOKEN = "SWEEP-logtoken-1111"
LOG_PASSWORD = "SWEEP-logpass-2222"
LOG_API_KEY = "SWEEP-logapikey-3333"
LOG_NESTED = "SWEEP-lognested-4444"
MODEL_KEY = "SWEEP-modelkey-5555aa"
ARGV_SECRET = "SWEEP-argv-6666bb"

SECRETS = [v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and "SWEEP" in v]


def forms(secret: str) -> list[str]:
    """The secret as is, and as it looks inside a base64 body at each of the three byte
    alignments (the characters that depend on the secret's bytes alone)."""
    raw = secret.encode()
    out = [secret]
    for k in range(3):
        text = base64.b64encode(b"\0" * k + raw + b"\0\0").decode()
        own = [i for i in range(len(text)) if (6 * i) // 8 >= k and (6 * i + 5) // 8 <= k + len(raw) - 1]
        out.append(text[own[0] : own[-1] + 1])
    return out


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if any(f and f in text for f in forms(s))]


@dataclass
class Sweep:
    """Everything hostd said: answers (errors whole, results only where they are not the
    secret's legitimate destination) and status outputs. Log lines come from the process."""

    said: list[str] = field(default_factory=list)
    rid: int = 0

    async def call(
        self, conn: RawConn, method: str, params: dict[str, Any], *, result_may_hold_secret: bool = False
    ) -> Any:
        self.rid += 1
        answer = await conn.call(method, params, rid=self.rid, timeout=20)
        if "error" in answer or not result_may_hold_secret:
            self.said.append(orjson.dumps(answer).decode())
        return answer

    async def status(self, hp: HostdProcess) -> dict[str, Any]:
        assert hp.control is not None
        async with await RawConn.open(hp.control) as ctl:
            self.rid += 1
            answer = await ctl.call("hostd.status", {}, rid=self.rid)
        self.said.append(orjson.dumps(answer).decode())
        return dict(answer["result"])


async def check(hp: HostdProcess, sweep: Sweep) -> None:
    """Stop hostd first: every line it logged, shutdown included, has been read then."""
    assert await hp.stop() == 0
    assert len(hp.stderr_lines) >= 5, "hostd logged almost nothing: the sweep would prove nothing"
    found = {line: leaks(line) for line in [*hp.stderr_lines, *sweep.said] if leaks(line)}
    assert not found, "secrets leaked:\n" + "\n".join(f"{v}: {k[:400]}" for k, v in found.items())


@pytest.fixture
def sweep() -> Sweep:
    return Sweep()


@pytest.fixture
async def servers() -> AsyncIterator[tuple[Upstream, FakeProxy]]:
    upstream = await Upstream().start()
    proxy = await FakeProxy(api_key=MODEL_KEY).start()

    @upstream.route("/echo")
    async def echo(req: Request) -> Response:
        # Answers with a header and body of its own holding a secret, as APIs do (Set-Cookie).
        return Response(200, [("Set-Cookie", f"s={COOKIE}"), ("Content-Type", "text/plain")], b"fine")

    upstream.hold(f"/bot{BOT_TOKEN}/stream", [b"one"], asyncio.Event(), [])
    try:
        yield upstream, proxy
    finally:
        await upstream.stop()
        await proxy.stop()


@pytest.fixture
async def daemon(short_tmp: Path, servers: tuple[Upstream, FakeProxy]) -> AsyncIterator[HostdProcess]:
    auth = short_tmp / "auth"
    auth.mkdir()
    hp = await start_hostd(
        short_tmp,
        "--log-level",
        "trace",
        "--auth-dir",
        str(auth),
        "--model-base-url",
        servers[1].url,
        control=True,
        env={"HOSTD_MODEL_API_KEY": MODEL_KEY},
    )
    try:
        yield hp
    finally:
        await hp.stop()


def secret_headers() -> dict[str, list[str]]:
    return {
        "Authorization": [f"Bearer {BEARER}"],
        "X-Api-Key": [API_KEY],
        "X-Goog-Api-Key": [GOOG_KEY],
        "Cookie": [f"session={COOKIE}"],
    }


def signed(base: str) -> str:
    return (
        f"{base}?X-Amz-Signature={AMZ_SIGNATURE}&sig={SIG}&token={URL_TOKEN}&X-Amz-Credential=AKIA%2F20260101&plain=1"
    )


async def test_http_calls_with_secret_headers_signed_urls_and_path_tokens(
    daemon: HostdProcess, servers: tuple[Upstream, FakeProxy], sweep: Sweep
) -> None:
    upstream, _ = servers
    assert daemon.socket is not None
    body = base64.b64encode(f'{{"api_key":"{API_KEY}"}}'.encode()).decode()
    userinfo_url = upstream.url.replace("http://", f"http://user:{URL_PASSWORD}@")
    async with await RawConn.open(daemon.socket) as conn:
        await sweep.call(conn, "hostd.hello", {"plugin_id": "sweeper"})
        ok = await sweep.call(
            conn,
            "host.http.do",
            {"method": "POST", "url": signed(upstream.url + "/echo"), "headers": secret_headers(), "body": body},
            result_may_hold_secret=True,  # the upstream's own Set-Cookie comes back to the plugin
        )
        assert ok["result"]["StatusCode"] == 200
        request = {"url": signed(userinfo_url + "/echo"), "headers": secret_headers()}
        await sweep.call(conn, "host.http.do", {"request": request}, result_may_hold_secret=True)
        opened = await sweep.call(
            conn,
            "host.http.do_stream",
            {"url": signed(upstream.url + f"/bot{BOT_TOKEN}/stream"), "headers": secret_headers()},
        )
        sid = opened["result"]["stream_id"]
        await sweep.call(conn, "host.http.stream_read", {"stream_id": sid})
        await sweep.call(conn, "host.http.stream_close", {"stream_id": sid})
        # Failures: a refused port, a bad method, an unknown stream, with the same secrets.
        for url in (signed("http://127.0.0.1:1/x"), signed(f"http://user:{URL_PASSWORD}@127.0.0.1:1/bot{BOT_TOKEN}/")):
            failed = await sweep.call(conn, "host.http.do", {"url": url, "headers": secret_headers()})
            assert failed["error"]["code"] == -32000, failed
        bad = await sweep.call(
            conn, "host.http.do", {"method": "BAD METHOD", "url": signed(upstream.url), "headers": secret_headers()}
        )
        assert "error" in bad
    # The secrets went to the upstream: they were in play, and only hostd's output is clean.
    seen = [r for r in upstream.requests if r.path.startswith("/echo")]
    assert seen and seen[0].header("Authorization") == f"Bearer {BEARER}" and seen[0].header("X-Api-Key") == API_KEY
    assert AMZ_SIGNATURE in seen[0].path
    await sweep.status(daemon)
    await daemon.wait_log("http request")  # the request log line exists, redacted
    await check(daemon, sweep)


async def test_credentials_saved_listed_and_refused(daemon: HostdProcess, short_tmp: Path, sweep: Sweep) -> None:
    assert daemon.socket is not None
    credential = {
        "type": "claude",
        "email": "a@example.com",
        "access_token": CRED_ACCESS,
        "refresh_token": CRED_REFRESH,
    }
    async with await RawConn.open(daemon.socket) as conn:
        saved = await sweep.call(conn, "host.auth.save", {"name": "claude-a.json", "json": credential})
        assert saved["result"]["name"] == "claude-a.json"
        listed = await sweep.call(conn, "host.auth.list", {})
        index = listed["result"]["files"][0]["auth_index"]
        got = await sweep.call(conn, "host.auth.get", {"auth_index": index}, result_may_hold_secret=True)
        assert got["result"]["json"]["refresh_token"] == CRED_REFRESH
        await sweep.call(conn, "host.auth.get_runtime", {"auth_index": index})
        # Refusals whose params hold the secret: bad weight, bad name, too large, not an object.
        refusals: list[dict[str, Any]] = [
            {"name": "b.json", "json": {**credential, "weight": "heavy"}},
            {"name": f"../{CRED_ACCESS}.json", "json": credential},
            {"name": "c.json", "json": {**credential, "pad": "x" * (2 * 1024 * 1024)}},
            {"name": "d.json", "json": [CRED_ACCESS]},
            {"name": "e.json", "json": CRED_REFRESH},
        ]
        for params in refusals:
            refused = await sweep.call(conn, "host.auth.save", params)
            assert "error" in refused, refused
    assert CRED_REFRESH in (short_tmp / "auth" / "claude-a.json").read_text()
    # A credential file that is not JSON, holding a secret, read by list: skipped, not quoted.
    (short_tmp / "auth" / "broken.json").write_text(f'{{"type": "claude", "access_token": "{CRED_ACCESS}"')
    async with await RawConn.open(daemon.socket) as conn:
        await sweep.call(conn, "host.auth.list", {})
    await sweep.status(daemon)
    await check(daemon, sweep)


async def test_plugin_log_fields_named_like_secrets(daemon: HostdProcess, sweep: Sweep) -> None:
    assert daemon.socket is not None
    fields = {
        "token": LOG_TOKEN,
        "Password": LOG_PASSWORD,
        "api_key": LOG_API_KEY,
        "X-Api-Key": LOG_API_KEY,
        "authorization": f"Bearer {BEARER}",
        "nested": {"inner": {"client_secret": LOG_NESTED}, "list": [{"refresh-token": LOG_NESTED}]},
        "headers": {"Authorization": [f"Bearer {BEARER}"], "Cookie": [COOKIE]},
    }
    async with await RawConn.open(daemon.socket) as conn:
        for level in ("trace", "debug", "info", "warn", "error"):
            await sweep.call(conn, "host.log", {"level": level, "message": "with secrets", "fields": fields})
    line = await daemon.wait_log('"with secrets"', '"error"')
    assert "[redacted]" in line
    await sweep.status(daemon)
    await check(daemon, sweep)


async def test_model_calls_with_the_proxy_key_and_plugin_headers(
    daemon: HostdProcess, servers: tuple[Upstream, FakeProxy], sweep: Sweep
) -> None:
    _, proxy = servers
    assert daemon.socket is not None
    body = base64.b64encode(orjson.dumps({"model": "m", "messages": [], "api_key": API_KEY})).decode()
    params = {"entry_protocol": "claude", "model": "m", "body": body, "headers": secret_headers()}
    async with await RawConn.open(daemon.socket) as conn:
        ok = await sweep.call(conn, "host.model.execute", params, result_may_hold_secret=True)
        assert ok["result"]["status_code"] == 200, ok
        streamed = await sweep.call(conn, "host.model.execute_stream", {**params, "stream": True})
        sid = streamed["result"]["stream_id"]
        while not (await sweep.call(conn, "host.model.stream_read", {"stream_id": sid}))["result"]["done"]:
            pass
        # A proxy_url with a password is validated and forwarded, never logged.
        await sweep.call(conn, "host.model.execute", {**params, "proxy_url": f"http://u:{PROXY_PASSWORD}@127.0.0.1:1"})
        await sweep.call(conn, "host.model.execute", {**params, "proxy_url": f"ftp://u:{PROXY_PASSWORD}@x"})
    assert proxy.received and proxy.received[0].header("x-api-key") == MODEL_KEY
    await sweep.status(daemon)
    await check(daemon, sweep)


async def test_a_proxy_password_in_the_http_config(
    short_tmp: Path, servers: tuple[Upstream, FakeProxy], sweep: Sweep
) -> None:
    """``[http] proxy = "http://user:SECRET@127.0.0.1:1"``: start-up, every request (which
    fails: nothing listens there), reload and status never show the password."""
    upstream, _ = servers
    cfg = short_tmp / "hostd.toml"
    cfg.write_text(f'[http]\nproxy = "http://user:{PROXY_PASSWORD}@127.0.0.1:1"\n')
    hp = await start_hostd(short_tmp, "--log-level", "trace", "--config", str(cfg), control=True)
    try:
        assert hp.socket is not None
        async with await RawConn.open(hp.socket) as conn:
            for url in (upstream.url + "/echo", signed(upstream.url + "/echo")):
                failed = await sweep.call(conn, "host.http.do", {"url": url, "headers": secret_headers()})
                assert failed["error"]["code"] == -32000, failed
            await sweep.call(conn, "host.http.do_stream", {"url": upstream.url + "/echo"})
        hp.proc.send_signal(1)  # SIGHUP: the configuration is read again (and logged)
        await hp.wait_log("reload")
        await sweep.status(hp)
    finally:
        assert await hp.stop() == 0
    await check(hp, sweep)


async def test_a_failed_hostd_run_does_not_log_the_plugin_command_line(short_tmp: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hostd",
        "run",
        "--log-level",
        "trace",
        "--auth-dir",
        "",
        "--model-base-url",
        "",
        "--",
        str(short_tmp / "no-such-plugin"),
        "--api-key",
        ARGV_SECRET,
        f"--token={ARGV_SECRET}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode != 0
    text = (out + err).decode(errors="replace")
    assert "no-such-plugin" in text, text  # it says what failed
    assert ARGV_SECRET not in text, text


def test_the_sweep_finds_a_secret_in_any_form() -> None:
    assert len(SECRETS) == len(set(SECRETS)) == 18
    for k in range(3):
        body = base64.b64encode(b"p" * k + LOG_TOKEN.encode() + b"tail").decode()
        assert leaks(f"a log line with {body} in it") == [LOG_TOKEN]
    assert leaks(f"Bearer {BEARER}") == [BEARER]
    assert leaks("nothing here [redacted]") == []
