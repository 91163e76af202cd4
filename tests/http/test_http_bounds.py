"""Every malformed, huge or slow HTTP request costs one request, never the node (issue 13).

Raw sockets over loopback against a real node process whose limits are lowered by config; its
log is JSON, so anything written to stderr beside the logger (a traceback) fails to parse.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.node_process import NodeProcess

from node.config import ConfigError, HttpConfig, build_config
from node.http.connections import ConnectionPool

TIMEOUT = 1.5  # http.timeout_seconds for these tests
THREADS = 4
MAX_CONNECTIONS = 64
MAX_BODY = 1024
HUGE = "9" * 30


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    running = NodeProcess(tmp_path_factory.mktemp("bounds"), {
        "node": {"log_format": "json"},
        "http": {"timeout_seconds": TIMEOUT, "threads": THREADS,
                 "max_connections": MAX_CONNECTIONS, "max_body_bytes": MAX_BODY},
    }).start()
    yield running
    running.stop()


def exchange(port: int, data: bytes, *parts: bytes, pause: float = 0.3,
             wait: float = 10.0) -> tuple[int | None, bytes, float]:
    """Send ``data`` (then each of ``parts`` after ``pause``, until the node answers) and read
    until the node closes: (status, reply, seconds from connecting to the first reply byte or
    the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        started = time.monotonic()
        sock.sendall(data)
        for part in parts:
            if select.select([sock], [], [], pause)[0]:
                break  # answered (or closed): stop sending
            sock.sendall(part)
        select.select([sock], [], [], wait)
        took = time.monotonic() - started
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else None
    return status, reply, took


def body_of(reply: bytes) -> dict[str, object]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    assert b"connection: close" in head.lower() or b" 404 " in head.split(b"\r\n")[0], head
    return json.loads(body)


def get(port: int, path: str, method: str = "GET") -> tuple[int | None, bytes, float]:
    return exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                    .encode())


def assert_clean_log(node: NodeProcess) -> list[dict[str, object]]:
    """Every line a JSON log record (nothing else on stderr), none an error or traceback."""
    records = [json.loads(line) for line in node.log().splitlines()]
    for record in records:
        assert record["level"] != "ERROR", record
        assert "Traceback" not in json.dumps(record), record
    return records


def threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def test_ids_out_of_sqlite_range_are_404(node: NodeProcess) -> None:
    port = node.http_port
    for method, path in [
        ("GET", "/api/jobs/9223372036854775808"),  # 2**63: one past SQLite's INTEGER
        ("GET", f"/api/jobs/{HUGE}"),
        ("GET", f"/api/jobs/{'7' * 5000}"),  # past Python's int() digit limit too
        ("GET", f"/api/jobs/{HUGE}/preview/0.png"),
        ("GET", f"/api/jobs/1/preview/{HUGE}.png"),
        ("POST", f"/api/jobs/{HUGE}/retry"),
        ("POST", f"/api/jobs/{HUGE}/cancel"),
        ("POST", f"/api/outbox/{HUGE}/retry"),
        ("GET", "/api/jobs/9223372036854775807"),  # the largest id: simply not there
        ("GET", "/api/jobs/-1"), ("GET", "/api/jobs/0x10"), ("GET", "/api/jobs/1e3"),
        ("GET", "/api/jobs/%D9%A3"), ("GET", "/api/jobs/\u0663".encode().decode("latin-1")),
    ]:
        status, reply, _ = exchange(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n"
                                    "Connection: close\r\n\r\n".encode("latin-1"))
        assert status == 404, (path[:60], reply[:300])
        message = body_of(reply)["error"]["message"]  # type: ignore[index]
        assert message.startswith(("no job", "no outbox item", "no preview",
                                   "no such endpoint")), message
    status, reply, _ = get(port, f"/api/jobs?limit={'9' * 5000}")
    assert status == 400 and b"limit must be" in reply
    assert get(port, "/health")[0] == 200
    assert_clean_log(node)


@pytest.mark.parametrize(("value", "status"), [
    (b"abc", 400), (b"-1", 400), (b"1.5", 400), (b"0x10", 400), (b"+5", 400),
    ("\u0663".encode(), 400), (b"", 400), (b"5, 5", 400), (b"9" * 30, 413),
    (str(MAX_BODY + 1).encode(), 413),
])
def test_content_length_must_be_a_small_non_negative_integer(node: NodeProcess, value: bytes,
                                                              status: int) -> None:
    got, reply, took = exchange(node.http_port, b"POST /api/outbox/retry-all HTTP/1.1\r\n"
                                b"Host: x\r\nContent-Length: " + value + b"\r\n\r\n12345")
    assert got == status, reply[:300]
    assert took < 1.0  # at once, not after the timeout
    assert body_of(reply)["error"]["status"] == status  # type: ignore[index]


def test_framing_that_is_not_one_content_length_is_refused(node: NodeProcess) -> None:
    port = node.http_port
    status, reply, _ = exchange(port, b"POST /api/outbox/retry-all HTTP/1.1\r\nHost: x\r\n"
                                b"Content-Length: 2\r\nContent-Length: 3\r\n\r\nabc")
    assert status == 400, reply
    status, reply, _ = exchange(port, b"POST /api/outbox/retry-all HTTP/1.1\r\nHost: x\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert status == 411, reply
    # a body within the limit is read and dropped; the request is answered
    status, reply, _ = exchange(port, b"POST /api/outbox/retry-all HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\nContent-Length: 3\r\n\r\nabc")
    assert status == 200, reply
    # Expect: 100-continue: the node asks for the body, then answers
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /api/outbox/retry-all HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                     b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"abc")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")


def test_slow_and_half_open_requests_time_out(node: NodeProcess) -> None:
    port = node.http_port
    short_body = (b"POST /api/outbox/retry-all HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                  b"\r\n" + b"x" * 10)
    half_head = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    drip = [b"X-Drip: %d\r\n" % n for n in range(40)]  # a header every 0.3 s: slowloris
    for data, parts in [(short_body, []), (half_head, []), (half_head, drip)]:
        status, reply, took = exchange(port, data, *parts)
        assert status == 408, (data, reply)
        assert b"http.timeout_seconds" in reply
        assert TIMEOUT - 0.1 <= took <= TIMEOUT + 2.0, took
    # a connection that says nothing is closed without a word
    status, reply, took = exchange(port, b"")
    assert reply == b"" and TIMEOUT - 0.1 <= took <= TIMEOUT + 2.0, (reply, took)
    assert get(port, "/health")[0] == 200
    assert_clean_log(node)


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET /\r\n\r\n",  # HTTP/0.9
    b"GET / HTTP/1.1 extra\r\n\r\n",
    b"GET / HTTP/1.x\r\n\r\n",
    b"GET / FTP/1.1\r\n\r\n",
    b"G(T / HTTP/1.1\r\n\r\n",
    b"GET /?token=SECRET-IN-LINE HTTP/1.1 x\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColonHere\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\nA: \x01\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % n for n in range(150)) + b"\r\n",
    b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\n\r\n",  # a head past 32 KiB, in full
    b"GET / HTTP/1.1\r\nX: " + b"a" * 40000,  # ... and one that never ends
]


def test_malformed_requests_get_4xx_at_once(node: NodeProcess) -> None:
    port = node.http_port
    for raw in MALFORMED:
        status, reply, took = exchange(port, raw)
        assert status is not None and 400 <= status < 500, (raw[:80], reply[:300])
        assert took < 1.0, (raw[:80], took)
        body_of(reply)
    # well formed, but not served: the standard answers
    assert exchange(port, b"BREW / HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 501
    assert exchange(port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")[0] == 505
    status, _, _ = exchange(port, b"GET /\xff\x00 HTTP/1.1\r\nHost: x\r\nConnection: close"
                            b"\r\n\r\n")
    assert status == 404
    # a TLS ClientHello on the plain port never ends a head: it times out
    status, _, took = exchange(port, bytes.fromhex("16030100a5010000a10303") + os.urandom(64))
    assert status == 408 and took <= TIMEOUT + 2.0
    assert get(port, "/health")[0] == 200
    records = assert_clean_log(node)
    assert "SECRET-IN-LINE" not in node.log()
    refusals = [r for r in records if str(r["message"]).startswith("HTTP: answered")]
    assert 1 <= len(refusals) <= 6, refusals  # throttled: a few lines, not one per request


def test_keep_alive_and_pipelining_still_work(node: NodeProcess) -> None:
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=5) as sock:
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(request + request)  # two in one packet
        replies = b""
        while replies.count(b"HTTP/1.1 200 OK") < 2:
            replies += sock.recv(65536)
        sock.sendall(b"GET /api/queues HTTP/1.1\r\nHost: x\r\n\r\n")  # and later a third
        reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 200 OK"), reply
        started = time.monotonic()
        assert sock.recv(65536) == b""  # idle: closed after the timeout
        assert time.monotonic() - started <= TIMEOUT + 2.0


def test_half_open_connections_hold_no_threads(node: NodeProcess) -> None:
    pid, port = node.proc.pid, node.http_port  # type: ignore[union-attr]
    threads, fds = threads_and_fds(pid)
    half = b"GET /health HTTP/1.1\r\nHost: x\r\n"
    attack: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS - 4):  # under the connection limit: all stay open
            attack.append(socket.create_connection(("127.0.0.1", port)))
            attack[-1].sendall(half)
        time.sleep(0.3)
        under = threads_and_fds(pid)
        status, _, took = get(port, "/health")
        assert status == 200 and took < 2.0, took
        for sock in attack:  # none was closed to make room
            assert not select.select([sock], [], [], 0)[0]
        for _ in range(300):  # past it: the oldest are closed to make room
            attack.append(socket.create_connection(("127.0.0.1", port)))
            attack[-1].sendall(half)
        time.sleep(0.3)
        over = threads_and_fds(pid)
        status, _, took = get(port, "/health")
        assert status == 200 and took < 2.0, took
    finally:
        for sock in attack:
            sock.close()
    assert under[0] <= threads and over[0] <= threads, (threads, under, over)
    assert under[1] >= fds + MAX_CONNECTIONS - 8
    assert over[1] <= fds + MAX_CONNECTIONS + 4, (fds, over)
    print(f"\nthreads {threads} -> {under[0]} ({MAX_CONNECTIONS - 4} half-open) -> {over[0]} "
          f"({len(attack)} half-open); fds {fds} -> {under[1]} -> {over[1]}")
    records = assert_clean_log(node)
    assert any("closed the one idle longest" in str(r["message"]) for r in records)


def test_all_busy_past_the_connection_limit_a_newcomer_gets_503() -> None:
    """In process: a pool of one thread and two connections, both busy with a slow request."""
    release = threading.Event()

    def slow(conn, request: bytes) -> bool:  # type: ignore[no-untyped-def]
        release.wait(5)
        conn.sock.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        return False

    listener = socket.create_server(("127.0.0.1", 0))
    pool = ConnectionPool(listener, slow, threads=1, max_connections=2, timeout=5, max_body=0)
    before = threading.active_count()
    pool.start()
    assert threading.active_count() == before + 2  # the selector and one worker
    busy = [socket.create_connection(("127.0.0.1", pool.port), timeout=5) for _ in range(2)]
    try:
        for sock in busy:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.3)
        status, reply, took = exchange(pool.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait=3)
        assert status == 503 and took < 1.0, reply
        assert threading.active_count() == before + 2
        release.set()
        for sock in busy:
            assert sock.recv(100).startswith(b"HTTP/1.1 204")
    finally:
        release.set()
        for sock in busy:
            sock.close()
        pool.stop()
    assert threading.active_count() == before


@pytest.mark.parametrize(("key", "value", "problem"), [
    ("timeout_seconds", 0, "must be greater than 0"),
    ("timeout_seconds", "soon", "must be a number"),
    ("threads", 0, "must be between 1 and 64"),
    ("threads", 1000, "must be between 1 and 64"),
    ("max_connections", 0, "must be between 1 and 4096"),
    ("max_body_bytes", -1, "must be 0 or more"),
])
def test_http_limits_are_validated(tmp_path, key: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"http": {key: value}}, tmp_path)
    assert str(caught.value).startswith(f"http.{key}: {problem}")


def test_http_limit_defaults() -> None:
    http = HttpConfig()
    assert (http.timeout_seconds, http.threads, http.max_connections,
            http.max_body_bytes) == (20.0, 8, 128, 65536)
