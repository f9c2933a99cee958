"""Running the app under uvicorn: where it may listen, how it speaks HTTP (TLS, root path,
CORS, access log: :class:`HttpOptions`), the ready and stop lines, graceful drain.

SIGTERM or SIGINT stops accepting connections, lets the requests in flight finish (up to
``DRAIN_SECONDS``), then the service finishes its queue, the stop line is printed and the
process exits 0. (uvicorn's own handler re-raises the signal after draining, which would end
the process by that signal instead.) A second SIGINT forces the exit.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import ipaddress
import os
import resource
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import uvicorn
import uvicorn.config
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from pig import signals
from pig.engine.serve.app import create_app
from pig.engine.serve.connections import BodyPool, ConnectionLimits, GuardedProtocol
from pig.engine.serve.hosts import HostCheck
from pig.engine.serve.service import ServeOptions, Service
from pig.errors import EnvironmentFault, PigError

DRAIN_SECONDS = 30
ACCESS_FORMAT = '%(asctime)s %(client_addr)s "%(request_line)s" %(status_code)s'


@dataclass(frozen=True)
class HttpOptions:
    """How the server speaks HTTP (``pig-engine serve`` flags); :meth:`check` before use."""

    access_log: bool = False  # one line per request on stdout
    ssl_certfile: Path | None = None  # HTTPS with this certificate chain (PEM) ...
    ssl_keyfile: Path | None = None  # ... and its private key (PEM)
    root_path: str = ""  # the path prefix a reverse proxy serves this under, e.g. /pig
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the API ("*": any)
    allowed_hosts: tuple[str, ...] = ()  # Host names besides IP addresses and localhost

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None

    def check(self) -> None:
        """One-line errors for options that cannot work, before anything is opened."""
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise PigError("--ssl-certfile and --ssl-keyfile go together (HTTPS needs both)")
        if self.ssl_certfile is not None and self.ssl_keyfile is not None:
            for flag, path in (("--ssl-certfile", self.ssl_certfile),
                               ("--ssl-keyfile", self.ssl_keyfile)):
                try:
                    Path(path).open("rb").close()
                except OSError as err:
                    raise PigError(f"{flag} {path}: cannot read it "
                                   f"({err.strerror or err})") from None
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                    self.ssl_certfile, self.ssl_keyfile)
            except ssl.SSLError as err:
                raise PigError(f"--ssl-certfile {self.ssl_certfile} / --ssl-keyfile "
                               f"{self.ssl_keyfile}: not a PEM certificate and its private "
                               f"key ({err.reason or err})") from None
        if self.root_path and not (self.root_path.startswith("/")
                                   and self.root_path.isprintable() and " " not in self.root_path):
            raise PigError(f"--root-path {self.root_path!r}: give a URL path starting with /, "
                           "e.g. /pig")
        for origin in self.cors_origins:
            parts = urllib.parse.urlsplit(origin)
            if origin != "*" and not (parts.scheme in ("http", "https") and parts.netloc
                                      and not parts.path and not parts.query
                                      and not parts.fragment):
                raise PigError(f"--cors-origin {origin!r}: give an origin, scheme://host[:port] "
                               "with no path (e.g. https://app.example.com), or *")
DEFAULT_HTTP = HttpOptions()
DEFAULT_LIMITS = ConnectionLimits()
SPARE_DESCRIPTORS = 256  # beyond the connections: index files, SQLite, the watcher, logs


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


def url_of(sock: socket.socket, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: HostCheck, on_ready: Callable[[], None]):
        super().__init__(config)
        self._app, self._on_ready = app, on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with signals.handling(self.handle_exit):
            yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._app.state.draining = True
        super().handle_exit(sig, frame)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._on_ready()


def _log_config(access_log: bool) -> dict[str, object]:
    """uvicorn's logging: warnings and errors on stderr; with ``access_log`` one line per
    request on stdout (time, client, request line, status)."""
    config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["access"].update(fmt=ACCESS_FORMAT, use_colors=False)
    config["formatters"]["default"]["use_colors"] = False
    config["loggers"]["uvicorn"]["level"] = config["loggers"]["uvicorn.error"]["level"] = "WARNING"
    config["loggers"]["uvicorn.access"]["level"] = "INFO" if access_log else "WARNING"
    return config


def fit_descriptors(limits: ConnectionLimits, log: Callable[[str], None]) -> ConnectionLimits:
    """``limits`` with ``max_connections`` that the descriptor limit can hold (raising the
    soft limit towards the hard one first), so that excess connections are refused before
    descriptors run out."""
    need = limits.max_connections + SPARE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        soft = need if hard == resource.RLIM_INFINITY else min(hard, need)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft >= need:
        return limits
    fits = soft - SPARE_DESCRIPTORS
    if fits < 1:
        raise EnvironmentFault(f"the descriptor limit ({soft}, ulimit -n) leaves no room for "
                               f"connections beside {SPARE_DESCRIPTORS} spare ones")
    log(f"pig-engine serve: --max-connections {limits.max_connections} lowered to {fits} "
        f"(descriptor limit {soft}, ulimit -n)")
    return dataclasses.replace(limits, max_connections=fits)


def run(app: HostCheck, sock: socket.socket, on_ready: Callable[[], None],
        http: HttpOptions = DEFAULT_HTTP, limits: ConnectionLimits = DEFAULT_LIMITS) -> None:
    """Serve ``app`` on the bound ``sock`` under ``limits`` until SIGTERM/SIGINT, then
    drain."""
    served: ASGIApp = app
    if http.cors_origins:  # outside the fast lane, so that its answers carry the headers too
        served = CORSMiddleware(app, allow_origins=list(http.cors_origins),
                                allow_methods=["GET", "POST"], max_age=600,
                                allow_headers=["Authorization", "Content-Type", "Range"])
    protocol = functools.partial(GuardedProtocol, limits=limits,
                                 pool=BodyPool(limits.body_pool_bytes))
    config = uvicorn.Config(served, log_config=_log_config(http.access_log), log_level=None,
                            access_log=http.access_log, lifespan="off",
                            timeout_graceful_shutdown=DRAIN_SECONDS, root_path=http.root_path,
                            ssl_certfile=http.ssl_certfile, ssl_keyfile=http.ssl_keyfile,
                            http=protocol)  # type: ignore[arg-type]
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
                say: Callable[[str], None], log: Callable[[str], None],
                http: HttpOptions = DEFAULT_HTTP,
                limits: ConnectionLimits = DEFAULT_LIMITS) -> None:
    """``pig-engine serve``: check where it may listen, open the indexes (several: of one
    bundle fingerprint, searched as one) and the encoder, bind, print the URL once accepting,
    serve until SIGTERM/SIGINT, print the stop line."""
    http.check()
    api_key = read_api_key(api_key_file) if api_key_file is not None else None
    check_exposure(host, port, api_key is not None, insecure_no_auth)
    limits = fit_descriptors(limits, log)
    service = Service(index_dirs, bundle_dir, backend, precision, options, log=log)
    started: list[float] = []
    try:
        sock = bind(host, port)
        url = url_of(sock, http.tls)

        def ready() -> None:
            started.append(time.monotonic())
            served = "; ".join(f"index {d}, generation {g}, {n} vectors" for d, (g, n)
                               in zip(service.index_dirs, service.state(), strict=True))
            auth = "bearer key required" if api_key else "no auth"
            say(f"pig-engine serve: ready at {url} ({served}; model {service.model_name}; "
                f"{auth}; search page {url}/, API {url}/docs)")

        run(create_app(service, api_key, http.allowed_hosts, http.cors_origins), sock, ready,
            http, limits)
    finally:
        service.close()
    if started:
        say(f"pig-engine serve: stopped ({url}, up {time.monotonic() - started[0]:.0f} s)")
