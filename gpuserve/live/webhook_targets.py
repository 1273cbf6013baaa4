"""Which addresses a job's `webhook` may reach: public ones, plus the networks an operator allows (SSRF protection)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["WebhookTarget", "WebhookTargets", "resolve_addresses"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook URL split into what the sender connects to: the host it names and the port."""

    scheme: str
    host: str
    port: int


class WebhookTargets:
    """The allow-list: a global unicast address is allowed; loopback, private, link-local and the like only if listed.

    Pure: addresses in, a refusal reason (or None) out; resolving is `resolve_addresses`.
    """

    def __init__(self, allowed_networks: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)

    @staticmethod
    def parse(url: str) -> WebhookTarget | str:
        """The URL's target, or why it has none (a refusal reason)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            return f"is not a valid URL ({exc})"
        if parts.scheme not in ("http", "https"):
            return "must be an http(s) URL"
        if not parts.hostname:
            return "has no host"
        return WebhookTarget(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))

    def address_allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.allowed if net.version == address.version):
            return True
        return address.is_global and not address.is_multicast

    def refusal(self, addresses: Iterable[str]) -> str | None:
        """Why these resolved addresses may not be sent to (the first refused one), or None."""
        found = False
        for text in addresses:
            found = True
            address = ipaddress.ip_address(text.split("%", 1)[0])  # a link-local v6 address may carry %scope
            if not self.address_allowed(address):
                return (
                    f"resolves to {text}, which is loopback, private, link-local or reserved"
                    " (allow its network in the server's webhook_allowed_networks)"
                )
        return None if found else "resolves to no address"


async def resolve_addresses(host: str, port: int, timeout_s: float) -> list[str]:
    """Every address `host` resolves to now (an IP literal is itself); the one DNS seam of webhooks."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    infos = await asyncio.wait_for(
        asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=timeout_s
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
