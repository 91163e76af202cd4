"""Token enforcement and start-up refusals of the HTTP interface, on a real node process."""

from __future__ import annotations

import socket
import subprocess
import sys

from support.tools import free_port

TOKEN = "s3cret-token-4f9"


def test_token_is_required_except_for_probes(node_factory, fetch) -> None:
    node = node_factory({"http": {"port": free_port(), "token": TOKEN}})
    port = node.http_port
    assert "bearer token required" in node.log()
    assert fetch(port, "GET", "/health").status == 200  # probes stay open
    assert fetch(port, "GET", "/ready").status == 200
    for path in ("/api/jobs", "/api/queues", "/api/models", "/api/outbox", "/metrics", "/"):
        missing = fetch(port, "GET", path)
        assert missing.status == 401, path
        assert missing.headers["www-authenticate"] == 'Bearer realm="radnode"'
        assert missing.json()["error"]["message"].startswith("a bearer token is required")
    wrong = fetch(port, "GET", "/api/jobs", {"Authorization": "Bearer nope"})
    assert wrong.status == 401 and "not valid" in wrong.json()["error"]["message"]
    assert fetch(port, "POST", "/api/outbox/retry-all").status == 401  # actions too
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert fetch(port, "GET", "/api/jobs", good).json() == {"jobs": [], "count": 0}
    assert fetch(port, "GET", "/metrics", good).status == 200
    # the dashboard: opened once with ?token=, then a cookie carries it (for the images)
    assert fetch(port, "GET", "/?token=nope").status == 401
    page = fetch(port, "GET", f"/?token={TOKEN}")
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"radnode_token={TOKEN};") and "HttpOnly" in cookie
    assert fetch(port, "GET", "/api/queues", {"Cookie": cookie.split(";")[0]}).status == 200
    assert fetch(port, "GET", f"/api/queues?token={TOKEN}").status == 401  # only for "/"
    assert TOKEN not in node.log()


def test_http_can_be_turned_off(node_factory, fetch) -> None:
    node = node_factory({"http": {"enabled": False, "port": free_port()}})
    assert "HTTP interface disabled" in node.log()
    try:
        fetch(node.http_port, "GET", "/health", timeout=3)
    except OSError:
        return
    raise AssertionError("the HTTP port answered although http.enabled = false")


def test_a_busy_port_stops_start_up_with_a_clear_message(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "config.toml"
        config.write_text(f'[node]\nport = {free_port()}\ndata_dir = "{tmp_path / "var"}"\n'
                          f'[storage]\nmin_free_mb = 0\n[http]\nport = {port}\n')
        result = subprocess.run([sys.executable, "-m", "node", "serve", "-c", str(config)],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"cannot start: http: cannot listen on 127.0.0.1:{port}" in result.stderr
