"""The HTTP server: a routing table, JSON errors, bearer token, every resource bounded.

Connections are read by one selector thread and whole requests served by a fixed pool
(node/http/connections.py); the stdlib ``BaseHTTPRequestHandler`` parses each request from memory.
Ids beyond SQLite's integer range, malformed request lines, headers and Content-Length values
get a 4xx answer and at most a throttled log line: never a traceback, never a hung thread.

``/health`` and ``/ready`` answer without a token (probes); everything else needs
``Authorization: Bearer TOKEN`` when ``http.token`` is set. A browser opens the dashboard once
as ``/?token=TOKEN``; the node then sets an HttpOnly cookie so the page's images load too.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import json
import logging
import re
import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from node.config import HttpConfig
from node.errors import StartupError
from node.http import api
from node.http.connections import Connection, ConnectionPool
from node.http.dashboard import render_dashboard
from node.http.preview import PreviewError, preview_png
from node.http.prometheus import CONTENT_TYPE as METRICS_TYPE
from node.http.prometheus import render_metrics
from node.store import MAX_ID

log = logging.getLogger("radnode.http")

COOKIE = "radnode_token"
OPEN_PATHS = ("/health", "/ready")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method, a header name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in a header value

Response = tuple[int, str, bytes, dict[str, str]]  # status, content type, body, headers
View = Callable[["_Request"], Response]


class _Request:
    def __init__(self, handler: BaseHTTPRequestHandler, match: re.Match[str]) -> None:
        url = urlsplit(handler.path)
        self.handler = handler
        self.path = url.path
        self.query = parse_qs(url.query)
        self.match = match

    def id_arg(self, name: str, what: str) -> int:
        """A decimal id from the path; one no store row can have is 404, not an overflow."""
        raw = self.match.group(name)
        if len(raw) > 19 or int(raw) > MAX_ID:
            shown = raw if len(raw) <= 24 else raw[:20] + "..."
            raise api.ApiError(404, f"no {what} {shown}")
        return int(raw)


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
        self._pool: ConnectionPool | None = None
        self._handler = _handler_class(self)
        self.routes: list[tuple[str, re.Pattern[str], View]] = [
            ("GET", re.compile(r"/"), self._dashboard),
            ("GET", re.compile(r"/health"), lambda r: _json(200, api.health(self.node))),
            ("GET", re.compile(r"/ready"), self._ready),
            ("GET", re.compile(r"/metrics"), self._metrics),
            ("GET", re.compile(r"/api/jobs"),
             lambda r: _json(200, api.list_jobs(self.node, r.query))),
            ("GET", re.compile(r"/api/jobs/(?P<id>[0-9]+)"),
             lambda r: _json(200, api.job_json(api.get_job(self.node, r.id_arg("id", "job"))))),
            ("POST", re.compile(r"/api/jobs/(?P<id>[0-9]+)/retry"),
             lambda r: _json(200, api.retry_job(self.node, r.id_arg("id", "job")))),
            ("POST", re.compile(r"/api/jobs/(?P<id>[0-9]+)/cancel"),
             lambda r: _json(200, api.cancel_job(self.node, r.id_arg("id", "job")))),
            ("GET", re.compile(r"/api/jobs/(?P<id>[0-9]+)/preview/(?P<n>[0-9]+)\.png"),
             self._preview),
            ("GET", re.compile(r"/api/models"), lambda r: _json(200, api.models(self.node))),
            ("GET", re.compile(r"/api/queues"), lambda r: _json(200, api.queues(self.node))),
            ("GET", re.compile(r"/api/outbox"),
             lambda r: _json(200, api.list_outbox(self.node, r.query))),
            ("POST", re.compile(r"/api/outbox/(?P<id>[0-9]+)/retry"),
             lambda r: _json(200, api.retry_outbox(self.node, r.id_arg("id", "outbox item")))),
            ("POST", re.compile(r"/api/outbox/retry-all"),
             lambda r: _json(200, api.retry_all_outbox(self.node))),
        ]

    @property
    def port(self) -> int:
        if self._pool is None:
            raise RuntimeError("the HTTP interface is not running")
        return self._pool.port

    def start(self) -> None:
        if not self.settings.enabled:
            log.info("HTTP interface disabled (http.enabled = false)")
            return
        host, port = self.settings.host, self.settings.port
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)[0][0]
            listener = socket.create_server((host, port), family=family,
                                            backlog=min(self.settings.max_connections, 1024))
        except OSError as exc:
            raise StartupError(f"http: cannot listen on {host}:{port}: {exc.strerror or exc}"
                               " (set http.port, or http.enabled = false)") from None
        s = self.settings
        self._pool = ConnectionPool(listener, self._serve_connection, threads=s.threads,
                                    max_connections=s.max_connections,
                                    timeout=s.timeout_seconds, max_body=s.max_body_bytes)
        self._pool.start()
        log.info("HTTP interface on http://%s:%d/%s", host, self.port,
                 " (bearer token required)" if self.settings.token else "")
        if not self.settings.token and not _is_loopback(host):
            log.warning("the HTTP interface listens on %s without a token: anyone who reaches "
                        "it may retry and cancel jobs; set http.token", host)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _serve_connection(self, conn: Connection, request: bytes) -> bool:
        """Answer one whole request (read by the pool) on a worker; True keeps the connection."""
        handler = self._handler(conn, request)
        handler.handle_one_request()
        conn.sock.sendall(handler.wfile.getvalue())
        return not handler.close_connection

    def refused(self, address: str, status: int, why: str) -> None:
        """A request answered 4xx before any view ran: one throttled line, no client text (a
        malformed request line may hold a token)."""
        if self._pool is not None:
            self._pool.throttle.log(logging.INFO, "malformed", "HTTP: answered %d to %s: %s",
                                    status, address, why)

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
        job = api.get_job(self.node, request.id_arg("id", "job"))
        package = self.node.packages.get(job.model)
        paths = [Path(self.node.spool_root) / p for p in
                 self.node.store.instance_paths(job.series_uid)]
        png = preview_png(job, request.id_arg("n", "preview"), paths,
                          package.manifest if package else None)
        return 200, "image/png", png, {"Cache-Control": "private, max-age=60"}


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _handler_class(server: HttpServer) -> Callable[[Connection, bytes], Any]:
    max_body = server.settings.max_body_bytes

    class Handler(BaseHTTPRequestHandler):
        """Parses one request from memory (the pool read it) and writes the answer to memory."""

        server_version = "radnode"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        default_request_version = "HTTP/1.1"  # so even a refusal has a status line
        wfile: io.BytesIO
        raw_requestline: bytes  # set by handle_one_request (typeshed omits it)

        def __init__(self, conn: Connection, request: bytes) -> None:  # no socket I/O here
            self.request = conn.sock
            self.client_address = conn.address
            self.rfile = io.BytesIO(request)
            self.wfile = io.BytesIO()
            self.close_connection = True
            self.command, self.requestline, self.request_version = "", "", "HTTP/1.1"

        def parse_request(self) -> bool:
            """The stdlib's parsing, stricter: three words, a token method, clean headers."""
            line = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            words = line.split()
            if len(words) != 3 or not _TOKEN.fullmatch(words[0]):
                self.requestline = line
                self.send_error(400, "a request line is METHOD PATH HTTP/1.1")
                return False
            if not super().parse_request():
                return False
            if self.headers.defects or any(not _TOKEN.fullmatch(k) or _CONTROL.search(v)
                                           for k, v in self.headers.items()):
                self.send_error(400, "a header line is malformed (NAME: VALUE, no line folding)")
                return False
            return True

        def handle_expect_100(self) -> bool:
            return True  # the pool waited for the whole body already; no interim answer

        def _body(self) -> Response | None:
            """Read the body Content-Length declares; an error answer when it cannot be."""
            if "Transfer-Encoding" in self.headers:
                return _error(411, "Transfer-Encoding is not supported; send Content-Length")
            values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
            if not values:
                return None
            raw = values.pop()
            if values or not (raw.isascii() and raw.isdigit()):
                return _error(400, "Content-Length must be one non-negative integer")
            if len(raw) > 18 or int(raw) > max_body:
                return _error(413, f"the body is larger than {max_body} bytes "
                                   "(http.max_body_bytes)")
            if len(self.rfile.read(int(raw))) < int(raw):
                return _error(400, "the body is shorter than its Content-Length")
            return None  # no endpoint reads a body; it is dropped

        def _serve(self, method: str) -> None:
            started = time.perf_counter()
            refusal = self._body()
            if refusal is not None:
                status, ctype, body, headers = refusal
                server.refused(self.client_address[0], status,
                               json.loads(body)["error"]["message"])
                self.close_connection = True
                headers = {**headers, "Connection": "close"}
            else:
                try:
                    status, ctype, body, headers = server.handle(self, method)
                except Exception:
                    log.exception("HTTP %s %s failed", method, urlsplit(self.path).path)
                    status, ctype, body, headers = _error(500,
                                                          "internal error; see the node's log")
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

        def send_error(self, code: int, message: str | None = None,
                       explain: str | None = None) -> None:
            """The stdlib's refusals (bad request line or version, too many headers, unknown
            method) as JSON, closing the connection, logged without the client's text."""
            phrase = HTTPStatus(code).phrase
            server.refused(self.client_address[0], code, phrase)
            _, ctype, body, _ = _error(code, (message or phrase)[:200])
            self.close_connection = True
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are logged by _serve at DEBUG and refusals by send_error, both
            # without the client's text (a request line may hold a token)

    return Handler
