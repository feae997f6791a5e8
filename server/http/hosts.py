"""Which Host headers are served (`--allowed-hosts`): Starlette's TrustedHostMiddleware,
answering in the JSON error shape and reading IPv6 literals ("[::1]:8000") right.

On a loopback address the default is the loopback names only: a web page whose name
a DNS rebinding attack points at 127.0.0.1 sends its own name as Host and is refused.
Elsewhere the default is any Host (behind a load balancer or a Kubernetes Service the
names vary; authentication guards the API): list your names to narrow it.
"""

from __future__ import annotations

import ipaddress
from typing import Final

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import Receive, Scope, Send

from server.http.errors import error_response
from server.settings import Settings

LOOPBACK_NAMES: Final = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """Whether listening on `host` reaches this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> list[str]:
    configured = settings.access.host_patterns
    if configured:
        return configured
    host = settings.http.host.lower()
    if is_loopback(host):
        return sorted({*LOOPBACK_NAMES, host.strip("[]")})
    return ["*"]


def host_name(header: str) -> str:
    """The name of a Host header, without its port: "[::1]:8000" → "::1"."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class TrustedHosts(TrustedHostMiddleware):
    def __init__(self, app: object, allowed_hosts: list[str]) -> None:
        super().__init__(app, allowed_hosts, www_redirect=False)  # type: ignore[arg-type]

    def allows(self, host: str) -> bool:
        return any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
            for pattern in self.allowed_hosts
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = host_name(Headers(scope=scope).get("host", ""))
        if self.allows(host):
            await self.app(scope, receive, send)
            return
        message = f"Host {host!r} is not served here (--allowed-hosts)"
        await error_response(400, "invalid_host", message)(scope, receive, send)
