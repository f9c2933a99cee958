"""Bounded connections: uvicorn's httptools protocol with the limits it lacks.

uvicorn (0.54) has no timeout before the first byte, for the request head or for the body,
no bound on the size of the head under httptools (a header value sent in pieces is
re-concatenated on every piece, on the event loop), and no bound on open connections before
the request head is parsed (``limit_concurrency`` answers 503 only once a head arrived, so
idle connections still hold descriptors until they run out). :class:`GuardedProtocol` adds,
per connection and in the event loop's own callbacks (no extra task, no polling):

* a bound on open connections, so descriptors never run out: at ``max_connections`` a new
  connection takes the place of the oldest one still waiting for its request head (a slow
  or idle client: it gets a 408), or, when every connection is busy with a request, gets a
  canned 503 (``Retry-After``) and is closed at once. A client that sends its request when
  it connects is served whatever number of slow connections an attacker keeps open;
* ``timeout_s`` for each of: the first byte and the whole head, the body, and a client that
  stops reading its answer (the send buffer stays full): 408, or the connection dropped;
* ``max_head_bytes`` for the request line and headers together and ``max_headers`` headers:
  431 and closed;
* request bodies held across all connections bounded by one :class:`BodyPool`: a request
  whose ``Content-Length`` (or chunked body so far) does not fit gets a 503 at once.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

RETRY_AFTER_S = 1


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection, and all of them together, may hold (``pig-engine serve`` flags
    ``--max-connections`` and ``--client-timeout``)."""

    max_connections: int = 1000
    timeout_s: float = 15.0  # first byte + head; body; a stalled reader of the answer
    max_head_bytes: int = 16 * 1024  # request line + headers
    max_headers: int = 100
    body_pool_bytes: int = 64 << 20  # request bodies held, all connections together


class BodyPool:
    """What all connections share (one event loop: no lock): the bytes of request bodies
    held, the connections waiting for a request head (oldest first), and how many are
    closing (refused, their loss not yet reported)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.held, self.closing = limit, 0, 0
        self.waiting: OrderedDict[GuardedProtocol, None] = OrderedDict()

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def give(self, n: int) -> None:
        self.held -= n


def canned(status: int, reason: str, type_: str, message: str,
           retry_after: bool = False) -> bytes:
    """A complete ``Connection: close`` JSON error response (the app's error shape)."""
    body = json.dumps({"error": {"type": type_, "message": message}}).encode()
    head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after:
        head.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under :class:`ConnectionLimits` (see the module doc)."""

    def __init__(self, *args: Any, limits: ConnectionLimits, pool: BodyPool,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits, self.pool = limits, pool
        self._refused = False
        self._in_head = True  # reading a request head (or waiting for one)
        self._head_bytes = self._headers = 0
        self._reserved = 0  # bytes of this connection's request bodies in the pool
        self._sized = False  # the request body's Content-Length was reserved up front
        self._timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None

    # --- refusals ------------------------------------------------------------------------
    def _mark_refused(self) -> None:
        """Stop reading this connection; count it as closing until its loss is reported."""
        if not self._refused and self.flow is not None:
            self.pool.closing += 1
        self._refused = True

    def _refuse(self, response: bytes | None) -> None:
        """Answer ``response`` (unless an answer already started) and close."""
        self._mark_refused()
        self._cancel()
        if response is not None and (self.cycle is None or not self.cycle.response_started):
            self.transport.write(response)
        self.transport.close()

    def _timed_out(self) -> None:
        self._timer = None
        what = "the request head" if self._in_head else "the request body"
        self._refuse(canned(408, "Request Timeout", "request_timeout",
                            f"{what} took longer than {self.limits.timeout_s:g} s "
                            "(--client-timeout)"))

    def _arm(self) -> None:
        self._cancel()
        self._timer = self.loop.call_later(self.limits.timeout_s, self._timed_out)
        if self._in_head:
            self.pool.waiting[self] = None

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pool.waiting.pop(self, None)

    # --- connection ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections and self.pool.waiting:
            oldest = next(iter(self.pool.waiting))
            oldest._refuse(canned(408, "Request Timeout", "request_timeout",
                                  "no request head yet, and the server is at "
                                  "--max-connections: this connection made room for another"))
        if len(self.connections) - self.pool.closing >= self.limits.max_connections:
            self.transport = transport
            self._refused = True
            transport.write(canned(503, "Service Unavailable", "overloaded",
                                   f"{len(self.connections)} connections are open "
                                   "(--max-connections); retry later", retry_after=True))
            transport.close()
            return
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused and self.flow is not None:
            self.pool.closing -= 1
        self._cancel()
        if self._send_timer is not None:
            self._send_timer.cancel()
        self.pool.give(self._reserved)
        self._reserved = 0
        if self.flow is not None:  # None: refused at connection_made
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        while self._in_head and data and not self._refused:
            room = self.limits.max_head_bytes - self._head_bytes
            if room <= 0:
                self._refuse(canned(431, "Request Header Fields Too Large", "head_too_large",
                                    f"the request line and headers exceed "
                                    f"{self.limits.max_head_bytes} bytes"))
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
        if data and not self._refused:
            super().data_received(data)

    # --- parser callbacks ----------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        if self._headers > self.limits.max_headers:
            self._refuse(canned(431, "Request Header Fields Too Large", "head_too_large",
                                f"more than {self.limits.max_headers} headers"))
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        length = next((v for k, v in self.headers if k == b"content-length"), b"")
        self._sized = length.isdigit()
        if self._sized and not self._hold(int(length)):
            return
        self._arm()  # the body's time
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self._refused or (not self._sized and not self._hold(len(body))):
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._cancel()
        self._in_head, self._head_bytes, self._headers = True, 0, 0
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self.pool.give(self._reserved)
        self._reserved = 0
        super().on_response_complete()
        if self._in_head and not self.transport.is_closing():
            self._arm()  # the next request's head (the keep-alive timer may close sooner)

    def _hold(self, n: int) -> bool:
        """Reserve ``n`` body bytes in the pool, or refuse the request (503) and say False."""
        if self.pool.take(n):
            self._reserved += n
            return True
        self._refuse(canned(503, "Service Unavailable", "overloaded",
                            "request bodies in flight fill the server's body memory; retry "
                            "later", retry_after=True))
        return False

    # --- a client that does not read its answer ------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.timeout_s, self._stalled)

    def resume_writing(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None
        super().resume_writing()

    def _stalled(self) -> None:
        self._send_timer = None
        self._mark_refused()
        self.transport.abort()  # drops the unsent answer: its memory is freed
