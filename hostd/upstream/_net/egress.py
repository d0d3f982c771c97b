"""The egress policy: which destinations ``host.http.*`` may reach (PROTOCOL.md §12).

On a direct connection the check runs on the resolved addresses of every connection
(redirect hops included), and the connection is made to an address that was checked, so a
name that resolves to a metadata endpoint cannot slip through by resolving differently a
second time. Through an upstream HTTP proxy hostd does not resolve: the host is read as the
proxy will read it (every IPv4 spelling ``inet_aton`` accepts, a trailing dot, the metadata
names) and checked before the request leaves.

Every refusal names the rule that refused it; none ever carries a URL's path or query.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore

from hostd.upstream._net.backend import AsyncioBackend, open_tcp

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, the rule's name): refused whatever the configuration says.
_ALWAYS_DENIED: list[tuple[Network, str]] = [
    (ipaddress.ip_network("169.254.169.254/32"), "cloud metadata address"),
    (ipaddress.ip_network("fd00:ec2::254/128"), "cloud metadata address"),
    (ipaddress.ip_network("100.100.100.200/32"), "cloud metadata address"),
    (ipaddress.ip_network("169.254.0.0/16"), "link-local address 169.254.0.0/16"),
    (ipaddress.ip_network("fe80::/10"), "link-local address fe80::/10"),
    (ipaddress.ip_network("0.0.0.0/8"), "unspecified address 0.0.0.0/8"),
    (ipaddress.ip_network("::/128"), "unspecified address ::"),
]
_PRIVATE: list[Network] = [
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
METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_COMPAT = ipaddress.ip_network("::/96")
_6TO4 = ipaddress.ip_network("2002::/16")


class EgressDenied(Exception):
    """The policy refused a destination; the handler turns it into -32002."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, str] | None:
    """The IPv4 address an IPv6 address carries, and the form that carries it."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped, "IPv4-mapped"
    value = int(address)
    if address in _NAT64:
        return ipaddress.IPv4Address(value & 0xFFFFFFFF), "NAT64"
    if address in _NAT64_LOCAL:
        # RFC 6052 with a /48 prefix: bits 48..63 and 72..87 (bits 64..71 are the "u" octet).
        high = (value >> 64) & 0xFFFF
        low = (value >> 40) & 0xFFFF
        return ipaddress.IPv4Address((high << 16) | low), "NAT64"
    if address in _6TO4:
        return ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF), "6to4"
    if address in _COMPAT and value > 1:  # not :: and not ::1 (loopback)
        return ipaddress.IPv4Address(value), "IPv4-compatible"
    return None


def parse_inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """``host`` read as ``inet_aton`` reads it (``2852039166``, ``0xa9.0xfe.43518``, octal ``0251``…).

    One trailing dot is allowed, as a resolver allows it. ``None`` when it is not an IPv4 spelling.
    """
    if host.endswith("."):
        host = host[:-1]
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers: list[int] = []
    for part in parts:
        lowered = part.lower()
        try:
            if lowered.startswith("0x"):
                digits = lowered[2:]
                number = int(digits, 16) if digits else 0
                if digits and not all(c in "0123456789abcdef" for c in digits):
                    return None
            elif len(part) > 1 and part.startswith("0"):
                number = int(part, 8)
            elif part.isascii() and part.isdigit():
                number = int(part)
            else:
                return None
        except ValueError:
            return None
        numbers.append(number)
    *head, last = numbers
    if any(n > 0xFF for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = last
    for i, n in enumerate(head):
        value |= n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


class HostRules:
    """``[http] allow_hosts`` / ``deny_hosts``: exact names, ``*.suffix`` patterns and CIDRs.

    Deny wins over allow; a non-empty allow list refuses everything it does not match. A
    name pattern matches the URL's host name; a CIDR matches the addresses connected to
    (on the proxy path, the host's literal address, as the proxy will read it).
    """

    def __init__(self, allow: list[str], deny: list[str]) -> None:
        self.allow = [_Pattern(p) for p in allow]
        self.deny = [_Pattern(p) for p in deny]

    def __bool__(self) -> bool:
        return bool(self.allow or self.deny)

    def check_name(self, name: str) -> None:
        """What can be decided from the name alone, before any lookup leaves the machine."""
        host = _normal_name(name)
        for pattern in self.deny:
            if pattern.matches(host, [], every=False):
                raise EgressDenied(f"egress to {host} is not allowed: matches http.deny_hosts {pattern.quoted}")
        names_only = all(p.network is None for p in self.allow)
        if self.allow and names_only and not any(p.matches(host, [], every=True) for p in self.allow):
            raise EgressDenied(f"egress to {host} is not allowed: not in http.allow_hosts")

    def check(self, name: str | None, addresses: list[IPAddress]) -> None:
        """Raise :class:`EgressDenied` when the rules refuse ``name`` reached at ``addresses``."""
        host = _normal_name(name) if name is not None else None
        target = host or ", ".join(str(a) for a in addresses)
        for pattern in self.deny:
            if pattern.matches(host, addresses, every=False):
                raise EgressDenied(f"egress to {target} is not allowed: matches http.deny_hosts {pattern.quoted}")
        if self.allow and not any(p.matches(host, addresses, every=True) for p in self.allow):
            raise EgressDenied(f"egress to {target} is not allowed: not in http.allow_hosts")


class _Pattern:
    __slots__ = ("name", "network", "quoted", "suffix")

    def __init__(self, text: str) -> None:
        self.quoted = '"' + text + '"'
        self.network: Network | None = None
        self.suffix: str | None = None
        self.name: str | None = None
        pattern = text.strip()
        if pattern.startswith("*."):
            self.suffix = "." + _normal_name(pattern[2:])
            return
        try:
            self.network = ipaddress.ip_network(pattern.strip("[]"), strict=False)
        except ValueError:
            self.name = _normal_name(pattern)

    def matches(self, host: str | None, addresses: list[IPAddress], *, every: bool) -> bool:
        if self.network is not None:
            if not addresses:
                return False
            found = [_in(a, self.network) for a in addresses]
            return all(found) if every else any(found)
        if host is None:
            return False
        if self.suffix is not None:
            return host.endswith(self.suffix)
        return host == self.name


def _in(address: IPAddress, network: Network) -> bool:
    return address.version == network.version and address in network


def _normal_name(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


class EgressPolicy:
    def __init__(
        self, deny_private: bool = False, allow_hosts: list[str] | None = None, deny_hosts: list[str] | None = None
    ) -> None:
        self.deny_private = deny_private
        self.rules = HostRules(allow_hosts or [], deny_hosts or [])

    def reason(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused (the rule's name), or None when it is allowed."""
        if isinstance(address, ipaddress.IPv6Address):
            embedded = embedded_ipv4(address)
            if embedded is not None:
                inner, form = embedded
                why = self.reason(inner)
                return f"{why} ({inner} embedded as {form})" if why is not None else None
        for net, rule in _ALWAYS_DENIED:
            if _in(address, net):
                return rule
        if self.deny_private:
            for net in _PRIVATE:
                if _in(address, net):
                    return f"private address {net} (http.deny_private)"
        return None

    def check(self, host: str, address: IPAddress) -> None:
        why = self.reason(address)
        if why is not None:
            raise EgressDenied(f"egress to {host} ({address}) is not allowed: {why}")

    def check_name(self, host: str) -> None:
        """The rules that need no address: the metadata names (any case, trailing dot), and
        the host rules that a name alone decides."""
        if _normal_name(host) in METADATA_NAMES:
            raise EgressDenied(f"egress to {host} is not allowed: cloud metadata name")
        if self.rules and _literal(host) is None:
            self.rules.check_name(host)

    def check_connect(self, host: str, addresses: list[IPAddress]) -> None:
        """A direct connection to ``host`` at its resolved ``addresses``."""
        self.check_name(host)
        for address in addresses:
            self.check(host, address)
        if self.rules:
            literal = _literal(host)
            self.rules.check(None if literal is not None else host, addresses)

    def check_proxied(self, host: str) -> None:
        """A request sent through an upstream proxy: ``host`` as the proxy will read it."""
        self.check_name(host)
        address = _literal(host)
        if address is None:
            address = parse_inet_aton(host)
        if address is not None:
            self.check(host, address)
        if self.rules:
            self.rules.check(None if address is not None else host, [address] if address is not None else [])


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


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
        self.policy.check_name(host)  # before any lookup leaves the machine
        addresses = await self._resolve(host, port, timeout)
        self.policy.check_connect(host, addresses)
        error: Exception | None = None
        for address in addresses:
            try:
                return await open_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out resolving {host}") from None
        except OSError as e:
            raise httpcore.ConnectError(f"lookup {host}: {e.strerror or e}") from None
        except UnicodeError:  # a label of 64+ characters, or an empty one (the idna codec)
            raise httpcore.ConnectError(f"lookup {host}: invalid host name") from None
        seen: list[IPAddress] = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if address not in seen:
                seen.append(address)
        if not seen:
            raise httpcore.ConnectError(f"lookup {host}: no addresses")
        return seen
