"""The egress policy. hostd runs inside a private network namespace (``unshare -n``) with only
loopback up, so even a request the policy failed to refuse could not leave the machine."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hostd.client import RpcError
from hostd.upstream._net.egress import EgressPolicy
from tests.support.hostd_proc import HostdProcess, running_hostd

pytestmark = pytest.mark.anyio

NETNS = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]


@pytest.fixture
async def isolated(short_tmp: Path) -> AsyncIterator[HostdProcess]:
    async with running_hostd(short_tmp, prefix=NETNS) as hp:
        yield hp


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
        "http://0.0.0.0:8080/",
        "http://[::]:8080/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://100.100.100.200/",
    ],
)
async def test_link_local_and_metadata_targets_are_forbidden(isolated: HostdProcess, url: str) -> None:
    async with await isolated.connect() as c:
        for method in ("host.http.do", "host.http.do_stream"):
            with pytest.raises(RpcError) as e:
                await c.call(method, {"url": url}, timeout=10)
            assert e.value.code == -32002
            assert e.value.data == {"code": "forbidden"}
            assert "is not allowed" in e.value.message


async def test_a_name_resolving_to_a_forbidden_address_is_refused(short_tmp: Path) -> None:
    hosts = short_tmp / "hosts"
    hosts.write_text("169.254.169.254 metadata.test\n")
    # A private mount namespace too, so the test's /etc/hosts is seen by hostd alone.
    prefix = ["unshare", "--net", "--mount", "--", "sh", "-c",
              f'ip link set lo up && mount --bind {hosts} /etc/hosts && exec "$@"', "sh"]  # fmt: skip
    async with running_hostd(short_tmp, prefix=prefix) as hp, await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": "http://metadata.test/"}, timeout=10)
    assert e.value.code == -32002
    assert "metadata.test (169.254.169.254)" in e.value.message


async def test_deny_private_refuses_loopback(short_tmp: Path) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text("[http]\ndeny_private = true\n")
    async with running_hostd(short_tmp, "--config", str(config), prefix=NETNS) as hp, await hp.connect() as c:
        with pytest.raises(RpcError) as e:
            await c.call("host.http.do", {"url": "http://127.0.0.1:9/"}, timeout=10)
    assert e.value.code == -32002


async def test_a_redirect_to_a_forbidden_address_is_refused(isolated: HostdProcess) -> None:
    """The check runs again at every redirect hop (the upstream lives inside the namespace)."""

    server = (
        "import http.server,sys\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(302); self.send_header('Location','http://169.254.169.254/'); self.end_headers()\n"
        "    def log_message(self,*a): pass\n"
        "s=http.server.HTTPServer(('127.0.0.1',0),H); print(s.server_port,flush=True); s.handle_request()\n"
    )
    pid = isolated.proc.pid
    proc = subprocess.Popen(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", server], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        async with await isolated.connect() as c:
            with pytest.raises(RpcError) as e:
                await c.call("host.http.do", {"url": f"http://127.0.0.1:{port}/"}, timeout=10)
        assert e.value.code == -32002
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_policy_reasons() -> None:
    import ipaddress

    policy = EgressPolicy()
    assert policy.reason(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.reason(ipaddress.ip_address("10.1.2.3")) is None
    assert policy.reason(ipaddress.ip_address("169.254.1.1")) is not None
    assert policy.reason(ipaddress.ip_address("::ffff:0.0.0.0")) is not None
    strict = EgressPolicy(deny_private=True)
    for address in ("127.0.0.1", "::1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd00::1"):
        assert (strict.reason(ipaddress.ip_address(address)) or "").startswith("private address"), address
    assert strict.reason(ipaddress.ip_address("8.8.8.8")) is None


@contextlib.contextmanager
def proxy_in_a_namespace(body: str) -> Iterator[tuple[int, list[str]]]:
    """A tiny HTTP proxy alone in a new network namespace, answering each GET with ``body``
    (a Python expression over ``self.path`` and ``seen``, the paths asked for so far).

    Yields its port and the command prefix that runs hostd in the same namespace: the proxy
    starts first, hostd joins it with nsenter.
    """
    script = (
        "import http.server\n"
        "seen=[]\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        seen.append(self.path); body={body}\n"
        "        self.send_response(200); self.send_header('Content-Length',str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self,*a): pass\n"
        "s=http.server.HTTPServer(('127.0.0.1',0),H); print(s.server_port,flush=True); s.serve_forever()\n"
    )
    holder = subprocess.Popen(
        ["unshare", "--net", "--", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" -c "$0"', script],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        yield port, ["nsenter", "-t", str(holder.pid), "-n", "--"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


async def test_through_an_upstream_proxy_literal_addresses_are_still_checked(short_tmp: Path) -> None:
    """With ``http.proxy`` set, requests go to the proxy (here a tiny one inside the namespace)."""
    with proxy_in_a_namespace("('proxied '+self.path).encode()") as (port, prefix):
        config = short_tmp / "hostd.toml"
        config.write_text(f'[http]\nproxy = "http://127.0.0.1:{port}"\n')
        async with running_hostd(short_tmp, "--config", str(config), prefix=prefix) as hp, await hp.connect() as c:
            ok = await c.call("host.http.do", {"url": "http://127.0.0.1:9/via-proxy"}, timeout=10)
            assert ok["StatusCode"] == 200
            assert base64.b64decode(ok["Body"]) == b"proxied http://127.0.0.1:9/via-proxy"
            with pytest.raises(RpcError) as e:
                await c.call("host.http.do", {"url": "http://169.254.169.254/"}, timeout=10)
            assert e.value.code == -32002


# PROTOCOL.md §12: canonical forms, embedded addresses, host rules ----------------------

SPELLINGS = [
    "2852039166",  # decimal
    "0xa9fea9fe",  # hex
    "0xA9.0xFE.0xA9.0xFE",
    "0251.0376.0251.0376",  # octal
    "169.254.43518",  # 3 parts
    "169.16689662",  # 2 parts
    "0xa9.254.0251.254",  # mixed
]


@pytest.mark.parametrize("spelling", [*SPELLINGS, "0", "127.1", "0x7f.1", "1.2.3.4.5", "08", "0x1g", "example.com"])
def test_inet_aton_spellings_are_read_as_the_c_library_reads_them(spelling: str) -> None:
    import ipaddress
    import socket

    from hostd.upstream._net.egress import parse_inet_aton

    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(spelling))
    except OSError:
        expected = None
    assert parse_inet_aton(spelling) == expected
    assert parse_inet_aton(spelling + ".") == expected  # a trailing dot, as a resolver allows


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("64:ff9b::a9fe:a9fe", "169.254.169.254 embedded as NAT64"),
        ("64:ff9b::169.254.1.1", "169.254.1.1 embedded as NAT64"),
        ("64:ff9b:1:a9fe:a9:fe00::", "169.254.169.254 embedded as NAT64"),  # RFC 6052 /48 layout
        ("::169.254.169.254", "169.254.169.254 embedded as IPv4-compatible"),
        ("2002:a9fe:a9fe::1", "169.254.169.254 embedded as 6to4"),
        ("::ffff:100.100.100.200", "100.100.100.200 embedded as IPv4-mapped"),
        ("::5", "0.0.0.5 embedded as IPv4-compatible"),
    ],
)
def test_ipv6_forms_embedding_a_refused_ipv4_address_are_refused(address: str, embedded: str) -> None:
    import ipaddress

    reason = EgressPolicy().reason(ipaddress.ip_address(address))
    assert reason is not None and embedded in reason


@pytest.mark.parametrize("address", ["::1", "64:ff9b::7f00:1", "2002:7f00:1::1", "::ffff:10.0.0.1", "2001:db8::1"])
def test_ipv6_forms_embedding_an_allowed_address_are_allowed(address: str) -> None:
    import ipaddress

    assert EgressPolicy().reason(ipaddress.ip_address(address)) is None


DIRECT_REFUSED = [
    ("http://[64:ff9b::169.254.169.254]/", "cloud metadata address (169.254.169.254 embedded as NAT64)"),
    ("http://[64:ff9b:1:a9fe:a9:fe00::]/", "embedded as NAT64"),
    ("http://[::169.254.169.254]/", "embedded as IPv4-compatible"),
    ("http://[2002:a9fe:a9fe::]/", "embedded as 6to4"),
    ("http://0.1.2.3/", "unspecified address 0.0.0.0/8"),
    ("http://[::]/", "unspecified address ::"),
    ("http://metadata.google.internal/", "cloud metadata name"),
    ("http://METADATA.Google.Internal./", "cloud metadata name"),
    ("http://metadata/", "cloud metadata name"),
    ("http://instance-data.ec2.internal./x", "cloud metadata name"),
    ("http://metadata.goog/", "cloud metadata name"),
]


@pytest.mark.netns
async def test_direct_requests_to_embedded_and_metadata_forms_are_refused_naming_the_rule(
    isolated: HostdProcess,
) -> None:
    async with await isolated.connect() as c:
        for url, rule in DIRECT_REFUSED:
            for method in ("host.http.do", "host.http.do_stream"):
                with pytest.raises(RpcError) as e:
                    await c.call(method, {"url": url}, timeout=10)
                assert e.value.code == -32002, (url, e.value.message)
                assert rule in e.value.message, (url, e.value.message)


@pytest.mark.netns
async def test_odd_host_names_are_execute_errors_not_internal_ones(isolated: HostdProcess) -> None:
    """Issue 10 item 8: a 64-character label or an empty one is refused by the idna codec."""
    async with await isolated.connect() as c:
        for host in ("a" * 64 + ".example", "a..example", "a" * 300):
            with pytest.raises(RpcError) as e:
                await c.call("host.http.do", {"url": f"http://{host}/"}, timeout=10)
            assert e.value.code == -32000, e.value.message
            assert e.value.message.startswith("execute host http request: "), e.value.message


@pytest.mark.netns
async def test_allow_and_deny_hosts_refine_the_policy(short_tmp: Path) -> None:
    config = short_tmp / "hostd.toml"
    config.write_text(
        "[http]\n"
        'allow_hosts = ["127.0.0.0/8", "localhost", "*.allowed.test"]\n'
        'deny_hosts = ["127.0.0.2", "*.blocked.allowed.test", "::1/128"]\n'
    )
    async with running_hostd(short_tmp, "--config", str(config), prefix=NETNS) as hp, await hp.connect() as c:

        async def outcome(url: str) -> tuple[int, str]:
            with pytest.raises(RpcError) as e:
                await c.call("host.http.do", {"url": url}, timeout=10)
            return e.value.code, e.value.message

        # Allowed by the policy: nothing listens on port 9, so the connection itself fails.
        for url in ("http://127.0.0.1:9/", "http://localhost:9/"):
            code, message = await outcome(url)
            assert code == -32000 and message.startswith("execute host http request: "), (url, message)
        code, message = await outcome("http://127.0.0.2:9/")
        assert (code, message) == (-32002, 'egress to 127.0.0.2 is not allowed: matches http.deny_hosts "127.0.0.2"')
        code, message = await outcome("http://x.blocked.allowed.test:9/")
        assert code == -32002 and 'http.deny_hosts "*.blocked.allowed.test"' in message  # deny wins over allow
        code, message = await outcome("http://[::1]:9/")
        assert code == -32002 and "http.deny_hosts" in message
        code, message = await outcome("http://10.1.2.3:9/")
        assert (code, message) == (-32002, "egress to 10.1.2.3 is not allowed: not in http.allow_hosts")


@pytest.mark.parametrize(
    "pattern", ["", "*", "a*.example", "*.x.*", "10.0.0.0/33", "not/a/cidr"], ids=lambda p: p or "empty"
)
async def test_a_bad_host_pattern_is_refused_at_start(short_tmp: Path, pattern: str) -> None:
    import asyncio

    config = short_tmp / "hostd.toml"
    config.write_text(f'[http]\ndeny_hosts = ["{pattern}"]\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hostd", "config", "check", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 2
    assert "http.deny_hosts[0]" in (out + err).decode()


async def test_a_socks5_proxy_is_refused_at_start_with_a_config_error(short_tmp: Path) -> None:
    """Issue 10 item 8: not accepted at start and then ImportError on every request."""
    import asyncio

    config = short_tmp / "hostd.toml"
    config.write_text('[http]\nproxy = "socks5://127.0.0.1:1080"\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hostd", "serve", "--config", str(config), "--listen", f"unix:{short_tmp / 's.sock'}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    assert "socks5:// proxies are not supported" in err.decode()


@pytest.mark.netns
async def test_through_an_upstream_proxy_every_spelling_of_a_refused_address_is_refused(short_tmp: Path) -> None:
    """The proxy resolves, not hostd: the host is read as the proxy will read it (§12)."""
    with proxy_in_a_namespace("repr(seen).encode()") as (port, prefix):
        config = short_tmp / "hostd.toml"
        config.write_text(f'[http]\nproxy = "http://127.0.0.1:{port}"\ndeny_hosts = ["*.denied.test"]\n')
        refused = [f"http://{s}/" for s in SPELLINGS] + [
            "http://169.254.169.254./",
            "http://0/",
            "http://0x0/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://metadata.google.internal/",
            "http://Metadata.Google.Internal./",
            "http://instance-data/",
            "http://x.denied.test/",
        ]
        async with running_hostd(short_tmp, "--config", str(config), prefix=prefix) as hp, await hp.connect() as c:
            for url in refused:
                with pytest.raises(RpcError) as e:
                    await c.call("host.http.do", {"url": url}, timeout=10)
                assert e.value.code == -32002, (url, e.value.message)
            ok = await c.call("host.http.do", {"url": "http://127.0.0.1:9/after"}, timeout=10)
        # The proxy saw only the allowed request: every refusal happened before anything was sent.
        assert base64.b64decode(ok["Body"]) == b"['http://127.0.0.1:9/after']"
