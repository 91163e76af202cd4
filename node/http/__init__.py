"""The node's HTTP interface: health, readiness, a JSON API, Prometheus metrics and a dashboard.

Requests are parsed by the standard library (``http.server``), preview PNGs encoded by Pillow;
bound to 127.0.0.1 by default. See docs/http-api.md.
"""

from node.http.server import HttpServer

__all__ = ["HttpServer"]
