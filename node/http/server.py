"""The HTTP server: stdlib ``ThreadingHTTPServer``, a routing table, JSON errors, bearer token.

``/health`` and ``/ready`` answer without a token (probes); everything else needs
``Authorization: Bearer TOKEN`` when ``http.token`` is set. A browser opens the dashboard once
as ``/?token=TOKEN``; the node then sets an HttpOnly cookie so the page's images load too.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from node.config import HttpConfig
from node.http import api
from node.http.dashboard import render_dashboard
from node.http.preview import PreviewError, preview_png
from node.http.prometheus import CONTENT_TYPE as METRICS_TYPE
from node.http.prometheus import render_metrics

if TYPE_CHECKING:
    from node.service import Service

log = logging.getLogger("radnode.http")

COOKIE = "radnode_token"
OPEN_PATHS = ("/health", "/ready")

Response = tuple[int, str, bytes, dict[str, str]]  # status, content type, body, headers
View = Callable[["_Request"], Response]


class _Request:
    def __init__(self, handler: BaseHTTPRequestHandler, match: re.Match[str]) -> None:
        url = urlsplit(handler.path)
        self.handler = handler
        self.path = url.path
        self.query = parse_qs(url.query)
        self.match = match

    def int_arg(self, name: str) -> int:
        return int(self.match.group(name))


def _json(status: int, data: Any) -> Response:
    body = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode()
    return status, "application/json; charset=utf-8", body, {}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    code, ctype, body, _ = _json(status, {"error": {"status": status, "message": message}})
    return code, ctype, body, headers or {}


class HttpServer:
    """The node's HTTP interface; :meth:`start` binds and serves in a thread, :meth:`stop`."""

    def __init__(self, settings: HttpConfig, node: api.Node) -> None:
        self.settings = settings
        self.node = node
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.routes: list[tuple[str, re.Pattern[str], View]] = [
            ("GET", re.compile(r"/"), self._dashboard),
            ("GET", re.compile(r"/health"), lambda r: _json(200, api.health(self.node))),
            ("GET", re.compile(r"/ready"), self._ready),
            ("GET", re.compile(r"/metrics"), self._metrics),
            ("GET", re.compile(r"/api/jobs"),
             lambda r: _json(200, api.list_jobs(self.node, r.query))),
            ("GET", re.compile(r"/api/jobs/(?P<id>\d+)"),
             lambda r: _json(200, api.job_json(api.get_job(self.node, r.int_arg("id"))))),
            ("POST", re.compile(r"/api/jobs/(?P<id>\d+)/retry"),
             lambda r: _json(200, api.retry_job(self.node, r.int_arg("id")))),
            ("POST", re.compile(r"/api/jobs/(?P<id>\d+)/cancel"),
             lambda r: _json(200, api.cancel_job(self.node, r.int_arg("id")))),
            ("GET", re.compile(r"/api/jobs/(?P<id>\d+)/preview/(?P<n>\d+)\.png"), self._preview),
            ("GET", re.compile(r"/api/models"), lambda r: _json(200, api.models(self.node))),
            ("GET", re.compile(r"/api/queues"), lambda r: _json(200, api.queues(self.node))),
            ("GET", re.compile(r"/api/outbox"),
             lambda r: _json(200, api.list_outbox(self.node, r.query))),
            ("POST", re.compile(r"/api/outbox/(?P<id>\d+)/retry"),
             lambda r: _json(200, api.retry_outbox(self.node, r.int_arg("id")))),
            ("POST", re.compile(r"/api/outbox/retry-all"),
             lambda r: _json(200, api.retry_all_outbox(self.node))),
        ]

    @classmethod
    def for_service(cls, service: Service) -> HttpServer:
        """The interface of a Service (its store, spool, listener, models and threads)."""

        def listener_port() -> int | None:
            try:
                return service.scp.port
            except RuntimeError:
                return None

        node = api.Node(
            store=service.store, spool_root=service.spool.root, packages=service.packages,
            registry=service.registry, listener_port=listener_port,
            free_bytes=service.spool.free_bytes, wake_workers=service.workers.wake,
            wake_sender=service.sender.wake, ae_title=service.config.node.ae_title,
            started_at=time.time(),
        )
        return cls(service.config.http, node)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the HTTP interface is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        if not self.settings.enabled:
            log.info("HTTP interface disabled (http.enabled = false)")
            return
        host, port = self.settings.host, self.settings.port
        try:
            server = ThreadingHTTPServer((host, port), _handler_class(self))
        except OSError as exc:
            from node.service import StartupError

            raise StartupError(f"http: cannot listen on {host}:{port}: {exc.strerror or exc}"
                               " (set http.port, or http.enabled = false)") from None
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="radnode-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        log.info("HTTP interface on http://%s:%d/%s", host, self.port,
                 " (bearer token required)" if self.settings.token else "")
        if not self.settings.token and not _is_loopback(host):
            log.warning("the HTTP interface listens on %s without a token: anyone who reaches "
                        "it may retry and cancel jobs; set http.token", host)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> Response:
        path = urlsplit(handler.path).path
        if len(path) > 1:
            path = path.rstrip("/")
        allowed = []
        for route_method, pattern, view in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if route_method != method and not (method == "HEAD" and route_method == "GET"):
                allowed.append(route_method)
                continue
            request = _Request(handler, match)
            extra: dict[str, str] = {}
            if path not in OPEN_PATHS and self.settings.token:
                denied = self._authorise(handler, request, extra)
                if denied is not None:
                    return denied
            try:
                status, ctype, body, headers = view(request)
            except api.ApiError as exc:
                return _error(exc.status, exc.message)
            except PreviewError as exc:
                return _error(exc.status, str(exc))
            return status, ctype, body, {**extra, **headers}
        if allowed:
            return _error(405, f"{method} is not allowed on {path}; use {', '.join(allowed)}",
                          {"Allow": ", ".join(allowed)})
        return _error(404, f"no such endpoint: {path}")

    def _authorise(self, handler: BaseHTTPRequestHandler, request: _Request,
                   extra: dict[str, str]) -> Response | None:
        token = self.settings.token.encode()
        offered: list[str] = []
        auth = handler.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        cookie = SimpleCookie()
        try:
            cookie.load(handler.headers.get("Cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            cookie = SimpleCookie()
        if COOKIE in cookie:
            offered.append(cookie[COOKIE].value)
        query_token = request.query.get("token", [""])[-1] if request.path == "/" else ""
        if query_token:
            offered.append(query_token)
        for value in offered:
            if hmac.compare_digest(value.encode(), token):
                if value == query_token:  # the dashboard's images need it too
                    extra["Set-Cookie"] = (f"{COOKIE}={value}; HttpOnly; SameSite=Strict; "
                                           "Path=/")
                return None
        reason = "a bearer token is required" if not offered else "the token is not valid"
        return _error(401, f"{reason} (Authorization: Bearer TOKEN)",
                      {"WWW-Authenticate": 'Bearer realm="radnode"'})

    # -- views that need more than JSON ----------------------------------------------------

    def _dashboard(self, request: _Request) -> Response:
        html = render_dashboard(self.node).encode()
        return 200, "text/html; charset=utf-8", html, {"Cache-Control": "no-store"}

    def _ready(self, request: _Request) -> Response:
        ready, checks = api.readiness(self.node)
        return _json(200 if ready else 503, {"ready": ready, "checks": checks})

    def _metrics(self, request: _Request) -> Response:
        return 200, METRICS_TYPE, render_metrics(self.node).encode(), {}

    def _preview(self, request: _Request) -> Response:
        job = api.get_job(self.node, request.int_arg("id"))
        package = self.node.packages.get(job.model)
        paths = [Path(self.node.spool_root) / p for p in
                 self.node.store.instance_paths(job.series_uid)]
        png = preview_png(job, request.int_arg("n"), paths,
                          package.manifest if package else None)
        return 200, "image/png", png, {"Cache-Control": "private, max-age=60"}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _handler_class(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "radnode"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _serve(self, method: str) -> None:
            started = time.perf_counter()
            try:
                status, ctype, body, headers = server.handle(self, method)
            except Exception:
                log.exception("HTTP %s %s failed", method, urlsplit(self.path).path)
                status, ctype, body, headers = _error(500, "internal error; see the node's log")
            length = int(self.headers.get("Content-Length") or 0)
            if length:  # a request body is not used; read it so the connection stays sane
                self.rfile.read(min(length, 1 << 20))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(body)
            log.debug("HTTP %s %s %d (%.1f ms)", method, urlsplit(self.path).path, status,
                      1000 * (time.perf_counter() - started))

        def do_GET(self) -> None:
            self._serve("GET")

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PUT(self) -> None:
            self._serve("PUT")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged by _serve, at DEBUG, without query strings (tokens)

    return Handler
