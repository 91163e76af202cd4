"""Connections and association requests are bounded before a peer has associated, and a hostile
peer cannot flood the log (issue 13): real sockets on loopback against a real node process,
with DCMTK's echoscu and storescu sending at the same time.

Attackers connect from other loopback addresses (127.0.1.x, 127.0.2.x), so the per-address
limit they hit is not the good sender's (127.0.0.1).
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from support.corpus import SMALL, series
from support.node_process import NodeProcess
from support.peers import echoscu, node_sections, storescu
from support.tools import dcmtk

MAX_PENDING = 16
PER_ADDRESS = 4
BUSY = 1.0  # network.busy_idle_timeout of the nodes under attack
RJ_LOCAL_LIMIT_TRANSIENT = bytes((0x03, 0, 0, 0, 0, 4, 0, 0x02, 0x03, 0x02))
RJ_LOCAL_LIMIT_PERMANENT = bytes((0x03, 0, 0, 0, 0, 4, 0, 0x01, 0x03, 0x02))


def start(workdir: Path, max_associations: int = 8, **network: Any) -> NodeProcess:
    """A node without routes (nothing but receiving runs), ARTIM 30 s (so only the limits and
    busy_idle_timeout free anything during a test)."""
    values = {"acse_timeout": 30.0, "network_timeout": 60.0, "busy_idle_timeout": BUSY,
              "max_pending_connections": MAX_PENDING, "max_pending_per_address": PER_ADDRESS,
              **network}
    sections = node_sections(network=values, node={"max_associations": max_associations})
    return NodeProcess(workdir, sections).start()


def usage(node: NodeProcess) -> tuple[int, int]:
    """The node process's threads and open file descriptors."""
    assert node.proc is not None
    pid = node.proc.pid
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("Threads:")))
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(node: NodeProcess) -> float:
    assert node.proc is not None
    fields = Path(f"/proc/{node.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LogMark:
    """What the node logged since this mark: lines and bytes."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.offset = node.log_path.stat().st_size

    def text(self) -> str:
        with self.node.log_path.open("rb") as f:
            f.seek(self.offset)
            return f.read().decode(errors="replace")

    def lines(self, needle: str = "") -> list[str]:
        return [line for line in self.text().splitlines() if needle in line]


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def answer(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the node sends before it closes (or within ``timeout``)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(4096):
            data += chunk
    return data


def state(sock: socket.socket) -> str:
    """'rejected' (an A-ASSOCIATE-RJ came), 'closed' (closed without one) or 'open'."""
    sock.setblocking(False)
    try:
        data = sock.recv(64)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    return "rejected" if data == RJ_LOCAL_LIMIT_TRANSIENT else "closed"


@contextlib.contextmanager
def silent_peers(port: int, count: int, network: str) -> Iterator[list[socket.socket]]:
    """``count`` TCP connections that never send a byte, spread over 100 source addresses."""
    socks = [connect(port, f"{network}.{1 + i % 100}") for i in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


# -- A-ASSOCIATE-RQ as bytes -----------------------------------------------------------------

def item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def associate_rq(contexts: list[tuple[bytes, list[bytes]]], calling: bytes = b"ATTACKER",
                 called: bytes = b"RADNODE") -> bytes:
    body = b"".join((
        struct.pack(">HH", 1, 0), called.ljust(16), calling.ljust(16), bytes(32),
        item(0x10, b"1.2.840.10008.3.1.1.1"),
        *(item(0x20, bytes((2 * i + 1, 0, 0, 0)) + item(0x30, abstract)
               + b"".join(item(0x40, ts) for ts in syntaxes))
          for i, (abstract, syntaxes) in enumerate(contexts)),
        item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4")),
    ))
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def bad_syntaxes(count: int, start: int = 0) -> list[bytes]:
    """Transfer syntax UIDs that are not UIDs (a space and a letter in each)."""
    return [b"1.2.3.4.5.%d x" % i for i in range(start, start + count)]


def send_request(port: int, pdu: bytes) -> tuple[bytes, float]:
    """Send an A-ASSOCIATE-RQ; the node's answer (its first PDU) and how long it took."""
    with connect(port, "127.0.2.1") as sock:
        began = time.monotonic()
        with contextlib.suppress(OSError):  # the node may answer and close before all is sent
            sock.sendall(pdu)
        sock.settimeout(10)
        data = b""
        with contextlib.suppress(OSError):
            while len(data) < 6 or len(data) < 6 + struct.unpack_from(">L", data, 2)[0]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data, time.monotonic() - began


# -- connections that never associate --------------------------------------------------------

def test_silent_connections_are_bounded_and_good_peers_still_get_in(tmp_path: Path) -> None:
    """300 connections that never send a byte: 16 are held (4 per address at most), the rest
    get A-ASSOCIATE-RJ (transient, local limit) and are closed at once, without a thread; the
    log says so in a few lines, and echoscu and storescu from a fresh address get in (the
    oldest silent connection is dropped for them once busy_idle_timeout has passed)."""
    node = start(tmp_path / "node")
    good = series(tmp_path / "good", SMALL)
    threads_before, fds_before = usage(node)
    mark = LogMark(node)
    began = time.monotonic()
    with silent_peers(node.port, 300, "127.0.1") as socks:
        opened = time.monotonic() - began
        time.sleep(0.3)
        states = [state(sock) for sock in socks]
        threads, fds = usage(node)
        print(f"\n300 silent connections opened in {opened:.2f} s: {states.count('open')} held, "
              f"{states.count('rejected')} rejected, {states.count('closed')} dropped; node "
              f"threads {threads_before} -> {threads}, fds {fds_before} -> {fds}")
        assert states.count("open") <= MAX_PENDING
        # those held longer than busy_idle_timeout while the rest connected were dropped
        assert states.count("rejected") >= 300 - MAX_PENDING * (2 + int(opened / BUSY))
        assert states.count("open") + states.count("rejected") + states.count("closed") == 300
        assert threads <= threads_before + MAX_PENDING + 2
        assert fds <= fds_before + MAX_PENDING + 4
        time.sleep(BUSY + 0.2)  # the silent ones are now old enough to be dropped for others
        echo_began = time.monotonic()
        echo = echoscu(node.port)
        echo_time = time.monotonic() - echo_began
        assert echo.returncode == 0, echo.stderr
        stored = storescu(node.port, good)
        assert stored.returncode == 0, stored.stderr
        print(f"echoscu under attack: {echo_time:.2f} s; storescu of {len(good)} instances: "
              "success")
        assert echo_time < 3
        threads, fds = usage(node)
        assert threads <= threads_before + MAX_PENDING + 2
    text = mark.text()
    print(f"log during the attack: {len(text.splitlines())} lines, {len(text)} bytes")
    assert len(mark.lines("refusing connections")) == 1
    assert len(text.splitlines()) <= 12, text
    assert "Traceback" not in text


def test_one_address_holds_at_most_its_share(tmp_path: Path) -> None:
    """Ten silent connections from one address: four are held; the other six are refused at
    once; echoscu from another address is unaffected and immediate."""
    node = start(tmp_path / "node")
    mark = LogMark(node)
    socks = [connect(node.port, "127.0.1.7") for _ in range(10)]
    try:
        answers = [answer(sock, 0.3) for sock in socks]
        refused = [a for a in answers if a == RJ_LOCAL_LIMIT_TRANSIENT]
        assert len(refused) == 10 - PER_ADDRESS, answers
        began = time.monotonic()
        assert echoscu(node.port).returncode == 0
        assert time.monotonic() - began < 2
    finally:
        for sock in socks:
            sock.close()
    assert len(mark.lines("network.max_pending_per_address")) == 1


def test_idle_associations_make_room_when_the_limit_is_reached(tmp_path: Path) -> None:
    """node.max_associations = 4, all held by idle peers: a newcomer is rejected while they
    have been idle less than busy_idle_timeout, and admitted after, by aborting the one idle
    longest."""
    node = start(tmp_path / "node", max_associations=4)
    ae = AE(ae_title="IDLER")
    ae.add_requested_context(Verification)
    idlers = [ae.associate("127.0.0.1", node.port, ae_title="RADNODE") for _ in range(4)]
    try:
        assert all(a.is_established for a in idlers)
        assert echoscu(node.port).returncode != 0  # full, nobody idle long enough yet
        time.sleep(BUSY + 0.3)
        began = time.monotonic()
        echo = echoscu(node.port)
        assert echo.returncode == 0, echo.stderr
        print(f"\necho admitted in {time.monotonic() - began:.2f} s by aborting an idle peer")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and all(a.is_established for a in idlers):
            time.sleep(0.05)
        assert sum(not a.is_established for a in idlers) == 1
        assert "aborted to admit" in node.log()
    finally:
        for a in idlers:
            if a.is_established:
                a.release()


# -- association requests ---------------------------------------------------------------------

def test_oversize_request_is_rejected_before_it_is_read(tmp_path: Path) -> None:
    """A 1.2 MB A-ASSOCIATE-RQ (60,000 transfer syntax UIDs that are not UIDs): an
    A-ASSOCIATE-RJ (permanent, local limit exceeded) at once, one log line, little CPU."""
    node = start(tmp_path / "node")
    contexts = [(b"1.2.840.10008.5.1.4.1.1.2", bad_syntaxes(2500, 2500 * i)) for i in range(24)]
    pdu = associate_rq(contexts)
    assert len(pdu) > 900_000
    mark, cpu = LogMark(node), cpu_seconds(node)
    data, seconds = send_request(node.port, pdu)
    cpu = cpu_seconds(node) - cpu
    text = mark.text()
    print(f"\n{len(pdu)} byte request: rejected in {seconds:.2f} s, node CPU {cpu:.2f} s, "
          f"log {len(text)} bytes")
    assert data[:10] == RJ_LOCAL_LIMIT_PERMANENT
    assert seconds < 2 and cpu < 1
    assert len(text.splitlines()) == 1 and "network.max_associate_request" in text
    assert echoscu(node.port).returncode == 0


def test_request_full_of_bad_uids_costs_one_line(tmp_path: Path) -> None:
    """Under the size limit, 40 contexts of 64 transfer syntaxes that are not UIDs (2,560 of
    them, 55 KB): the association is accepted with every context rejected, one warning line
    (pydicom and pynetdicom used to log three lines per UID)."""
    node = start(tmp_path / "node")
    contexts = [(b"1.2.840.10008.5.1.4.1.1.2", bad_syntaxes(64, 64 * i)) for i in range(40)]
    pdu = associate_rq(contexts)
    assert 40_000 < len(pdu) < 65536
    mark = LogMark(node)
    data, seconds = send_request(node.port, pdu)
    text = mark.text()
    print(f"\n{len(pdu)} byte request with 2560 bad UIDs: answered in {seconds:.2f} s, log "
          f"{len(text.splitlines())} lines, {len(text)} bytes")
    assert data[0] == 0x02  # A-ASSOCIATE-AC
    assert seconds < 2
    assert len(mark.lines("not valid UIDs")) == 1
    assert len(text) < 2000, text


def test_too_many_transfer_syntaxes_or_broken_items_are_refused(tmp_path: Path) -> None:
    node = start(tmp_path / "node")
    mark = LogMark(node)
    # 65 transfer syntaxes in one context: beyond the node's limit, rejected
    data, _ = send_request(node.port, associate_rq(
        [(b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"] * 65)]))
    assert data[:10] == RJ_LOCAL_LIMIT_PERMANENT
    # an item that claims more bytes than the PDU holds: malformed, A-ABORT
    pdu = bytearray(associate_rq([(b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])]))
    struct.pack_into(">H", pdu, 6 + 68 + 2, 60000)
    data, _ = send_request(node.port, bytes(pdu))
    assert data[0] == 0x07  # A-ABORT
    # even context ID: malformed
    pdu = bytearray(associate_rq([(b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])]))
    context_item = 6 + 68 + 4 + len(b"1.2.840.10008.3.1.1.1")
    assert pdu[context_item] == 0x20
    pdu[context_item + 4] = 2
    data, _ = send_request(node.port, bytes(pdu))
    assert data[0] == 0x07
    assert echoscu(node.port).returncode == 0
    assert "Traceback" not in mark.text() and " ERROR " not in mark.text()


def test_non_ascii_ae_titles_get_a_rejection_and_one_warning(tmp_path: Path) -> None:
    """50 requests with calling AE titles that are not ASCII (Latin-1 and UTF-8) and one with a
    control character: each gets A-ASSOCIATE-RJ (calling AE title not recognised); the log
    holds one warning line per request for the first 10, then nothing (the rest are counted),
    and no traceback or ERROR."""
    node = start(tmp_path / "node")
    mark = LogMark(node)
    titles = ["ÄRZTE".encode("latin-1"), "CT-ÜBER".encode(), b"CT\x01SCANNER"] * 17
    for title in titles:
        data, _ = send_request(node.port, associate_rq(
            [(b"1.2.840.10008.1.1", [b"1.2.840.10008.1.2"])], calling=title))
        assert data[:10] == bytes((0x03, 0, 0, 0, 0, 4, 0, 0x01, 0x01, 0x03)), data
    text = mark.text()
    print(f"\n{len(titles)} bad AE titles: log {len(text.splitlines())} lines, {len(text)} bytes")
    assert "Traceback" not in text and " ERROR " not in text
    assert len(mark.lines("calling AE title")) == 10
    assert len(text.splitlines()) == 10
    assert echoscu(node.port).returncode == 0


# -- file descriptors ---------------------------------------------------------------------------

def test_running_out_of_file_descriptors_backs_off_with_one_line(tmp_path: Path) -> None:
    """The node's file-descriptor limit is lowered (prlimit) to what it has open plus 8, then
    40 silent connections arrive: accept fails with EMFILE; the listener backs off (one log
    line, a little CPU) instead of spinning; when the connections go, echoscu gets in and one
    more line says accepting works again."""
    node = start(tmp_path / "node", max_pending_connections=64, max_pending_per_address=64)
    assert node.proc is not None
    pid = node.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    _, fds = usage(node)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (fds + 8, hard))
    mark, cpu = LogMark(node), cpu_seconds(node)
    try:
        with silent_peers(node.port, 40, "127.0.1"):
            time.sleep(3)
            cpu = cpu_seconds(node) - cpu
            text = mark.text()
            print(f"\nEMFILE for 3 s: node CPU {cpu:.2f} s, log {len(text.splitlines())} lines,"
                  f" {len(text)} bytes")
            assert len(mark.lines("accepting connections failed")) == 1, text
            assert len(text) < 4000, text
            assert cpu < 1.0
        began = time.monotonic()
        echo = echoscu(node.port)
        print(f"echoscu after the connections closed: {time.monotonic() - began:.2f} s")
        assert echo.returncode == 0, echo.stderr
        node.wait_for(lambda: mark.lines("accepting connections works again"), timeout=15)
    finally:
        with contextlib.suppress(OSError):
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


def _serve_with_nofile(workdir: Path, limits: tuple[int, int], **node: Any) -> str:
    """Start the node with RLIMIT_NOFILE set to ``limits``, wait until it listens, kill it;
    its log."""
    proto = NodeProcess(workdir, node_sections(node=node))
    log_path = workdir / "node.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "-c", str(proto.config)], stdout=out,
            stderr=subprocess.STDOUT, cwd=workdir,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limits))
        try:
            deadline = time.monotonic() + 30
            while "listening as" not in log_path.read_text(errors="replace"):
                assert proc.poll() is None, log_path.read_text(errors="replace")
                assert time.monotonic() < deadline, "the node did not start"
                time.sleep(0.1)
        finally:
            proc.kill()
            proc.wait(10)
    return log_path.read_text(errors="replace")


@pytest.mark.parametrize("limits, expect", [
    ((256, 4096), "soft limit raised from 256 to"),
    ((256, 256), "raise the limit (ulimit -n"),
], ids=["soft-raised", "hard-too-low"])
def test_file_descriptor_limit_is_checked_at_start(tmp_path: Path, limits: tuple[int, int],
                                                   expect: str) -> None:
    """max_associations 64 and 32 pending need about 544 descriptors: a soft limit of 256 is
    raised where the hard limit allows; else one warning names the settings."""
    text = _serve_with_nofile(tmp_path / "node", limits, max_associations=64)
    assert len([line for line in text.splitlines() if "file descriptors:" in line]) == 1, text
    assert expect in text


def test_refused_connection_reads_as_a_rejection_to_dcmtk(tmp_path: Path) -> None:
    """echoscu from an address that already holds its share of pending connections is told
    the association was rejected (transient, local limit exceeded), at once."""
    node = start(tmp_path / "node", max_pending_per_address=2)
    socks = [connect(node.port, "127.0.0.1") for _ in range(2)]
    try:
        time.sleep(0.2)
        began = time.monotonic()
        echo = subprocess.run([dcmtk("echoscu"), "-to", "5", "-aec", "RADNODE", "127.0.0.1",
                               str(node.port)], capture_output=True, text=True, timeout=30)
        seconds = time.monotonic() - began
        print(f"\nechoscu refused in {seconds:.2f} s: {echo.stderr.strip()[:200]}")
        assert echo.returncode != 0
        assert seconds < 2
        assert "Rejected" in echo.stderr or "reject" in echo.stderr.lower()
    finally:
        for sock in socks:
            sock.close()
