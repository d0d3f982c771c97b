"""The egress policy: which addresses ``host.http.*`` may connect to.

The check runs on the resolved addresses of every connection (redirect hops included),
and the connection is made to an address that was checked, so a name that resolves to a
metadata endpoint cannot slip through by resolving differently a second time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore

from hostd.upstream.netstream import AsyncioBackend, open_tcp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_ALWAYS_DENIED = [
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "fe80::/10",  # IPv6 link-local
        "0.0.0.0/32",
        "::/128",
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
    )
]
_PRIVATE = [
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # CGNAT
        "fc00::/7",  # ULA
    )
]


class EgressDenied(Exception):
    """The policy refused a destination; the handler turns it into -32002."""


class EgressPolicy:
    def __init__(self, deny_private: bool = False) -> None:
        self.deny_private = deny_private

    def reason(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when it is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for net in _ALWAYS_DENIED:
            if address in net:
                return "link-local or metadata address"
        if self.deny_private:
            for net in _PRIVATE:
                if address in net:
                    return "private address"
        return None

    def check(self, host: str, address: IPAddress) -> None:
        why = self.reason(address)
        if why is not None:
            raise EgressDenied(f"egress to {host} ({address}) is not allowed: {why}")

    def check_literal(self, host: str) -> None:
        """Check ``host`` when it is an IP literal (all that can be checked through a proxy)."""
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            return
        self.check(host, address)


class EgressBackend(AsyncioBackend):
    """A network backend that resolves, checks, then connects to a checked address.

    httpcore keeps the original host name for TLS (SNI) and the Host header.
    """

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        for address in addresses:
            self.policy.check(host, address)
        error: Exception | None = None
        for address in addresses:
            try:
                return await open_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out resolving {host}") from None
        except OSError as e:
            raise httpcore.ConnectError(f"lookup {host}: {e.strerror or e}") from None
        seen: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in seen:
                seen.append(address)
        if not seen:
            raise httpcore.ConnectError(f"lookup {host}: no addresses")
        return seen
