"""Slow or stuck peers are dropped after network.network_timeout (2 s here) and never hold up
the peers that send at the same time."""

from __future__ import annotations

import socket
import threading
import time

import pydicom
from pynetdicom.sop_class import CTImageStorage
from support.corpus import SMALL, series
from support.peers import (
    NETWORK_TIMEOUT,
    c_store_command,
    echoscu,
    open_association,
    pdata,
    sop_uids,
    start_node,
    storescu,
    wait_closed,
)

LIMIT = NETWORK_TIMEOUT + 4  # dropped by then (the timers tick in 2 s plus loop delays)


def _silent_tcp(port: int, out: dict[str, float]) -> None:
    """Connects and never sends an A-ASSOCIATE-RQ."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.monotonic()
        try:
            while sock.recv(4096):  # an A-ABORT may come before the close
                pass
        except OSError:
            pass
        out["silent-tcp"] = time.monotonic() - start


def test_silent_and_stalled_peers_are_dropped_while_others_send(tmp_path) -> None:
    node = start_node(tmp_path / "node")
    try:
        good = series(tmp_path / "good", SMALL)
        dropped: dict[str, float] = {}
        # 1. a TCP connection that never asks for an association
        tcp = threading.Thread(target=_silent_tcp, args=(node.port, dropped))
        tcp.start()
        # 2. an association that then says nothing
        silent, _, _ = open_association(node.port, CTImageStorage)
        # 3. an association that stops in the middle of a dataset
        stalled, sock, context = open_association(node.port, CTImageStorage)
        stuck_uid = pydicom.dcmread(good[0], stop_before_pixels=True).SOPInstanceUID
        body = good[0].read_bytes()[1000:5000]
        sock.sendall(pdata(context, c_store_command(CTImageStorage, stuck_uid), True, True))
        sock.sendall(pdata(context, body, command=False, last=False))
        # 4. a PDU cut short: the header claims 16 KB, 100 bytes come
        cut, cut_sock, context = open_association(node.port, CTImageStorage)
        cut_sock.sendall(pdata(context, body[:100], command=False, last=False,
                               claimed_length=16384))
        start = time.monotonic()

        # meanwhile a good modality sends a whole series, and echoes are answered
        result = storescu(node.port, good[1:])
        good_time = time.monotonic() - start
        assert result.returncode == 0, result.stderr
        assert echoscu(node.port).returncode == 0

        for name, assoc in (("silent", silent), ("stalled", stalled), ("cut-pdu", cut)):
            dropped[name] = time.monotonic() - start + wait_closed(
                assoc, LIMIT - (time.monotonic() - start) + 1)
        tcp.join(timeout=LIMIT + 5)
        print("\ndropped after (s): " + ", ".join(f"{k} {v:.1f}" for k, v in dropped.items())
              + f"; good series of {len(good) - 1} sent meanwhile in {good_time:.1f} s")
        assert set(dropped) == {"silent-tcp", "silent", "stalled", "cut-pdu"}
        for name, seconds in dropped.items():
            assert NETWORK_TIMEOUT * 0.5 < seconds < LIMIT, (name, seconds)
        assert good_time < NETWORK_TIMEOUT, "the good sender waited for the stuck peers"

        store = node.store()
        assert not store.has_instance(stuck_uid)
        assert all(store.has_instance(uid) for uid in sop_uids(good[1:]))
        assert not list((node.data_dir / "spool" / ".tmp").iterdir())
        assert storescu(node.port, good[:1]).returncode == 0  # and after
    finally:
        node.kill()
