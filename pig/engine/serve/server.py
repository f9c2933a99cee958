"""Running the app under uvicorn: where it may listen, the ready line, graceful drain.

SIGTERM or SIGINT stops accepting connections, lets the requests in flight finish (up to
``DRAIN_SECONDS``), then the service finishes its queue and the process exits 0. (uvicorn's
own handler re-raises the signal after draining, which would end the process by that signal
instead.) A second SIGINT forces the exit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from pig.engine.serve.app import create_app
from pig.engine.serve.fastlane import FastLane
from pig.engine.serve.service import ServeOptions, Service
from pig.errors import PigError

DRAIN_SECONDS = 30.0


def resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[str, int]]:
    """The address ``host:port`` binds to (first of getaddrinfo), as a one-line error."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise PigError(f"--host {host}: cannot resolve it ({err})") from None
    return family, (str(addr[0]), int(addr[1]))


def check_exposure(host: str, port: int, has_key: bool, insecure: bool) -> None:
    """Refuse a non-loopback address without a key, unless ``insecure``."""
    _, (address, _) = resolve(host, port)
    if not (has_key or insecure or ipaddress.ip_address(address.split("%")[0]).is_loopback):
        raise PigError(f"--host {host} ({address}) is reachable from other machines: give "
                       "--api-key-file FILE, or --insecure-no-auth to serve without a key")


def bind(host: str, port: int) -> socket.socket:
    family, addr = resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise PigError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: FastLane, on_ready: Callable[[], None]):
        super().__init__(config)
        self._app, self._on_ready = app, on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.draining = True
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


def run(app: FastLane, sock: socket.socket, on_ready: Callable[[], None]) -> None:
    """Serve ``app`` on the bound ``sock`` until SIGTERM/SIGINT, then drain."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=DRAIN_SECONDS)
    _Server(config, app, on_ready).run(sockets=[sock])


def read_api_key(path: str | os.PathLike[str]) -> str:
    """The key in ``path`` (surrounding whitespace removed); one-line errors."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise PigError(f"{path}: cannot read the API key ({err})") from None
    if not key:
        raise PigError(f"{path}: the API key file is empty")
    return key


def serve_index(index_dirs: Sequence[str | os.PathLike[str]], *, host: str, port: int,
                bundle_dir: str | os.PathLike[str] | None,
                backend: str, precision: str | None, api_key_file: str | os.PathLike[str] | None,
                insecure_no_auth: bool, options: ServeOptions,
                say: Callable[[str], None], log: Callable[[str], None]) -> None:
    """``pig-engine serve``: check where it may listen, open the indexes (several: of one
    bundle fingerprint, searched as one) and the encoder, bind, print the URL once accepting,
    serve until SIGTERM/SIGINT."""
    api_key = read_api_key(api_key_file) if api_key_file is not None else None
    check_exposure(host, port, api_key is not None, insecure_no_auth)
    service = Service(index_dirs, bundle_dir, backend, precision, options, log=log)
    try:
        sock = bind(host, port)
        url = url_of(sock)

        def ready() -> None:
            served = "; ".join(f"index {d}, generation {g}, {n} vectors" for d, (g, n)
                               in zip(service.index_dirs, service.state(), strict=True))
            auth = "bearer key required" if api_key else "no auth"
            say(f"pig-engine serve: ready at {url} ({served}; {auth}; search page {url}/, "
                f"API {url}/docs)")

        run(create_app(service, api_key), sock, ready)
    finally:
        service.close()
