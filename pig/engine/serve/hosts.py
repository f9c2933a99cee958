"""Host and Origin checks against DNS rebinding and cross-site requests (ASGI middleware).

A web page the user opens can make the browser send requests to ``http://127.0.0.1:PORT``
under a name of its own (DNS rebinding: ``attacker.example`` resolving to 127.0.0.1), and
read the answers as same-origin. Such requests carry the page's name in ``Host``, so only the
server's own names are accepted: IP address literals (a rebinding needs a name), ``localhost``
and the names given with ``--allowed-host`` (``*``: any, for a trusted reverse proxy that
checks names itself). A request with an ``Origin`` (a browser's cross-origin or POST request)
must come from an accepted name too, or be one of the ``--cors-origin`` origins (``null``,
the origin of sandboxed and ``file:`` pages, is refused). Both hold with or without an API
key, on every route.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from pig.engine.serve.errors import error

LOOPBACK_NAMES = ("localhost",)
ANY = "*"


def host_name(value: str) -> str | None:
    """The name (or address) of a ``Host`` value ``name[:port]`` / ``[v6][:port]``,
    lower-cased without a trailing dot; None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:] if end > 0 else ":x"
        return value[1:end] if end > 0 and (rest == "" or rest[1:].isdigit()) else None
    name, sep, port = value.rpartition(":")
    if not sep:
        name = value
    elif not port.isdigit():
        return None
    return name.rstrip(".") or None


def _is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
    except ValueError:
        return False
    return True


class HostCheck:
    """ASGI middleware: 421 for a ``Host`` that is not one of the server's names, 403 for an
    ``Origin`` that is not; see the module docstring."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str] = (),
                 origins: Iterable[str] = ()) -> None:
        self.app = app
        self.state: Any = getattr(app, "state", None)  # the app's (draining), if any
        self.allowed = {*LOOPBACK_NAMES, *(a.lower().rstrip(".") for a in allowed)}
        self.origins = {o.lower().rstrip("/") for o in origins}  # --cors-origin

    def accepts(self, name: str | None) -> bool:
        return name is not None and (ANY in self.allowed or name in self.allowed
                                     or _is_address(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        for key, value in scope["headers"]:
            if key == b"host" and host is None:
                host = value.decode("latin-1")
            elif key == b"origin" and origin is None:
                origin = value.decode("latin-1")
        if host is not None and not self.accepts(host_name(host)):
            await error(421, f"Host {host!r} is not a name of this server (give "
                        "--allowed-host NAME to accept it)", type_="wrong_host")(
                scope, receive, send)
            return
        if origin is not None and not self._origin_ok(origin):
            await error(403, f"Origin {origin!r} is not a name of this server (give "
                        "--allowed-host NAME to accept it)", type_="wrong_origin")(
                scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _origin_ok(self, origin: str) -> bool:
        if ANY in self.origins or origin.strip().lower().rstrip("/") in self.origins:
            return True
        try:
            parts = urlsplit(origin.strip())
            name = parts.hostname
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and self.accepts(
            name.rstrip(".") if name else None)
