"""The egress policy. hostd runs inside a private network namespace (``unshare -n``) with only
loopback up, so even a request the policy failed to refuse could not leave the machine."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
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
    import subprocess
    import sys

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


async def test_through_an_upstream_proxy_literal_addresses_are_still_checked(short_tmp: Path) -> None:
    """With ``http.proxy`` set, requests go to the proxy (here a tiny one inside the namespace)."""
    import subprocess
    import sys

    proxy = (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body=('proxied '+self.path).encode()\n"
        "        self.send_response(200); self.send_header('Content-Length',str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self,*a): pass\n"
        "s=http.server.HTTPServer(('127.0.0.1',0),H); print(s.server_port,flush=True); s.serve_forever()\n"
    )
    # One namespace for both: the proxy starts first, hostd joins it with nsenter.
    holder = subprocess.Popen(
        ["unshare", "--net", "--", "sh", "-c", f'ip link set lo up && exec "{sys.executable}" -c "$0"', proxy],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        config = short_tmp / "hostd.toml"
        config.write_text(f'[http]\nproxy = "http://127.0.0.1:{port}"\n')
        prefix = ["nsenter", "-t", str(holder.pid), "-n", "--"]
        async with running_hostd(short_tmp, "--config", str(config), prefix=prefix) as hp, await hp.connect() as c:
            ok = await c.call("host.http.do", {"url": "http://127.0.0.1:9/via-proxy"}, timeout=10)
            assert ok["StatusCode"] == 200
            assert base64.b64decode(ok["Body"]) == b"proxied http://127.0.0.1:9/via-proxy"
            with pytest.raises(RpcError) as e:
                await c.call("host.http.do", {"url": "http://169.254.169.254/"}, timeout=10)
            assert e.value.code == -32002
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
