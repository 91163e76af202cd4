"""A seeded protocol fuzzer, run for a fixed number of cases (issue 13).

Mutated A-ASSOCIATE-RQ PDUs and PDU streams on raw sockets, then mutated datasets in C-STOREs
over real associations, against a real node process. The node must answer or drop each peer
without crashing, never answer Success for a dataset it did not keep whole, keep its threads,
file descriptors and log bounded, and still serve a well-behaved sender afterwards.
RADNODE_FUZZ_CASES (default 400) and RADNODE_FUZZ_SEED (default 13) change the run.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from support import corpus
from support.peers import echoscu, send_raw, start_node, storescu

CASES = int(os.environ.get("RADNODE_FUZZ_CASES", "400"))
SEED = int(os.environ.get("RADNODE_FUZZ_SEED", "13"))
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(called: bytes = b"RADNODE", calling: bytes = b"FUZZER") -> bytes:
    """A valid A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing CT Image Storage and C-ECHO."""
    contexts = b""
    for context_id, abstract in ((1, CTImageStorage), (3, "1.2.840.10008.1.1")):
        syntaxes = b"".join(_item(0x40, s.encode()) for s in (ExplicitVRLittleEndian,
                                                                ImplicitVRLittleEndian))
        contexts += _item(0x20, struct.pack(">BBBB", context_id, 0, 0, 0)
                          + _item(0x30, abstract.encode()) + syntaxes)
    user = _item(0x50, _item(0x51, struct.pack(">L", 16384))
                 + _item(0x52, b"1.2.826.0.1.3680043.10.1") + _item(0x55, b"FUZZ"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT) + contexts + user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One of the classic mutations: flipped bytes, a cut, garbage appended, a length field
    that lies, an item repeated, or bytes inserted."""
    b = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:
        for _ in range(rng.randint(1, 12)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif kind == 1:
        del b[rng.randrange(1, len(b)):]
    elif kind == 2:
        b += rng.randbytes(rng.randint(1, 4096))
    elif kind == 3:  # a 16- or 32-bit length somewhere claims anything
        at = rng.randrange(0, max(1, len(b) - 4))
        fmt = rng.choice([">H", ">L"])
        value = rng.choice([0, 1, 0xFFFF, 0xFFFFFFFF, rng.randrange(1 << 16), len(b) * 2])
        struct.pack_into(fmt, b, at, value & (0xFFFF if fmt == ">H" else 0xFFFFFFFF))
    elif kind == 4:
        start = rng.randrange(len(b))
        chunk = b[start:start + rng.randint(1, 256)]
        b[start:start] = chunk * rng.randint(1, 50)
    else:
        at = rng.randrange(len(b))
        b[at:at] = rng.randbytes(rng.randint(1, 64))
    return bytes(b)


def stream(rng: random.Random) -> bytes:
    """What a broken peer sends: a mutated association request, then maybe more PDUs."""
    out = mutate(associate_rq(), rng) if rng.random() < 0.8 else associate_rq()
    for _ in range(rng.randint(0, 3)):
        kind = rng.choice([0x04, 0x05, 0x06, 0x07, 0x01, rng.randrange(256)])
        body = rng.randbytes(rng.randint(0, 64))
        out += struct.pack(">BBL", kind, 0, len(body)) + body
    return out


def exchange(port: int, data: bytes, wait: float = 0.3) -> bytes:
    """Send ``data`` on a fresh connection; what came back before ``wait`` or the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except OSError:
            return b""  # the node closed while we were still sending: fine
        got = b""
        try:
            while len(got) < 65536:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        return got


def _process(node, what: str) -> int:
    assert node.proc is not None
    if what == "fd":
        return len(os.listdir(f"/proc/{node.proc.pid}/fd"))
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads in /proc status")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    n = start_node(tmp_path_factory.mktemp("fuzz"))
    yield n
    n.stop()


def test_mutated_association_requests(node) -> None:
    rng = random.Random(SEED)
    before_log = len(node.log())
    answers: dict[int, int] = {}
    started = time.monotonic()
    for _ in range(CASES):
        got = exchange(node.port, stream(rng))
        answers[got[0] if got else -1] = answers.get(got[0] if got else -1, 0) + 1
        assert node.proc is not None and node.proc.poll() is None, "the node died"
    seconds = time.monotonic() - started
    print(f"{CASES} streams in {seconds:.1f} s; first PDU type answered: {answers} "
          f"(-1: closed without answer)")
    # every answer is a PDU the standard lets an acceptor send first
    assert set(answers) <= {-1, 0x02, 0x03, 0x07}, answers
    time.sleep(1.0)  # dropped peers' threads wind down
    assert _process(node, "fd") < 64
    assert _process(node, "threads") < 48
    log_bytes = len(node.log()) - before_log
    assert log_bytes < 1500 * CASES, f"{log_bytes} bytes of log for {CASES} cases"
    assert "Traceback" not in node.log()[before_log:]
    assert echoscu(node.port).returncode == 0


def test_mutated_datasets_never_get_a_false_success(node, tmp_path) -> None:
    rng = random.Random(SEED + 1)
    source = pydicom.dcmread(corpus.series(tmp_path / "valid")[0])
    successes = refusals = 0
    for n in range(max(20, CASES // 4)):
        uid = f"1.2.826.0.1.3680043.10.13.{SEED}.{n}"
        source.SOPInstanceUID = uid
        mutated = corpus.encode(source)
        for _ in range(rng.randint(1, 3)):
            mutated = mutate(mutated, rng)
        path = tmp_path / f"case{n}.dcm"
        corpus.raw_file(path, mutated, CTImageStorage, uid, ExplicitVRLittleEndian)
        try:
            statuses = send_raw(node.port, [path])
        except AssertionError:
            continue  # association refused (e.g. limits): not a Success
        if statuses == [0x0000]:
            successes += 1
            rows = node.wait_for(lambda u=uid: node.store().instance(u), timeout=5)
            stored = pydicom.dcmread(node.data_dir / "spool" / rows.path)
            for element in stored.iterall():  # the kept file reads whole
                _ = element.value
            assert str(stored.SOPInstanceUID) == uid
        else:
            refusals += 1
        assert node.proc is not None and node.proc.poll() is None, "the node died"
    print(f"mutated datasets: {successes} Success, {refusals} refused")
    assert successes + refusals > 0
    good = corpus.series(tmp_path / "good")
    assert storescu(node.port, good).returncode == 0
