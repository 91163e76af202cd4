"""The node's HTTP interface: health, readiness, a JSON API, Prometheus metrics and a dashboard.

Standard library only (``http.server``); bound to 127.0.0.1 by default. See docs/http-api.md.
"""

from node.http.server import HttpServer

__all__ = ["HttpServer"]
