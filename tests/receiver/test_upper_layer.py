"""The receiver's own DICOM upper layer and DIMSE codec, spoken to byte by byte over a real
socket (pynetdicom's PDU classes build and read the association PDUs)."""

from __future__ import annotations

import socket
import struct
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification
from support.peers import c_store_command, pdata

from node.receiver import dimse
from node.synthetic import SeriesGeometry, write_series


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out

    header = exactly(6)
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, header + exactly(length)


class RawPeer:
    """An association requestor that writes and reads the PDUs itself."""

    def __init__(self, port: int, sop_class: str, extra_items: tuple = ()) -> None:
        primitive = A_ASSOCIATE()
        primitive.application_context_name = "1.2.840.10008.3.1.1.1"
        primitive.calling_ae_title = "RAWPEER"
        primitive.called_ae_title = "RADNODE"
        context = build_context(sop_class, [ExplicitVRLittleEndian])
        context.context_id = 1
        primitive.presentation_context_definition_list = [context]
        length = MaximumLengthNotification()
        length.maximum_length_received = 16384
        class_uid = ImplementationClassUIDNotification()
        class_uid.implementation_class_uid = "1.2.826.0.1.3680043.9.7433.1"
        primitive.user_information = [length, class_uid, *extra_items]
        request = A_ASSOCIATE_RQ()
        request.from_primitive(primitive)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(request.encode())
        pdu_type, raw = _read_pdu(self.sock)
        assert pdu_type == 0x02, f"association not accepted (PDU type {pdu_type:#x})"
        self.accept = A_ASSOCIATE_AC()
        self.accept.decode(raw)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> pydicom.Dataset:
        """The next DIMSE response command set."""
        command = b""
        while True:
            pdu_type, raw = _read_pdu(self.sock)
            assert pdu_type == 0x04, f"expected P-DATA-TF, got PDU type {pdu_type:#x}"
            pos = 6
            while pos < len(raw):
                length, _, control = struct.unpack_from(">LBB", raw, pos)
                command += raw[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control == 0x03:
                    return decode(BytesIO(command), True, True)

    def release(self) -> int:
        self.sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")
        pdu_type, _ = _read_pdu(self.sock)
        self.sock.close()
        return pdu_type


def _command(field: int, sop_class: str, dataset: bool, message_id: int = 7) -> bytes:
    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHL", 0, tag, len(value)) + value

    uid = sop_class.encode() + (b"\0" if len(sop_class) % 2 else b"")
    body = b"".join((
        element(0x0002, uid),
        element(0x0100, struct.pack("<H", field)),
        element(0x0110, struct.pack("<H", message_id)),
        element(0x0800, struct.pack("<H", 0x0000 if dataset else 0x0101)),
    ))
    return element(0x0000, struct.pack("<L", len(body))) + body


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_series(tmp_path_factory.mktemp("ct"),
                        SeriesGeometry(rows=64, columns=64, slices=1))[0]


def _dataset_bytes(path: Path) -> tuple[str, bytes]:
    """The SOP Instance UID and the dataset as encoded after the file meta."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    raw = path.read_bytes()
    meta_end = 132 + 12 + struct.unpack_from("<L", raw, 140)[0]
    return str(ds.SOPInstanceUID), raw[meta_end:]


# -- the command set codec -----------------------------------------------------------------

def test_command_set_is_read_and_answered() -> None:
    request = dimse.read_command(c_store_command(CTImageStorage, "1.2.3.4", message_id=42))
    assert request == dimse.Command(command_field=dimse.C_STORE_RQ, message_id=42,
                                    has_dataset=True, affected_sop_class_uid=CTImageStorage,
                                    affected_sop_instance_uid="1.2.3.4")
    answer = decode(BytesIO(dimse.response(request, 0xA900)), True, True)
    assert answer.CommandField == 0x8001
    assert answer.MessageIDBeingRespondedTo == 42
    assert answer.Status == 0xA900
    assert answer.CommandDataSetType == 0x0101
    assert answer.AffectedSOPClassUID == CTImageStorage
    assert answer.AffectedSOPInstanceUID == "1.2.3.4"
    assert answer.CommandGroupLength == len(dimse.response(request, 0xA900)) - 12


@pytest.mark.parametrize("data", [
    b"\x00\x00\x00\x01\x04\x00\x00\x00",  # claims 4 bytes that are not there
    struct.pack("<HHL", 0x0008, 0x0016, 0),  # not group 0000
    struct.pack("<HHL", 0, 0x0110, 2) + b"\x01\x00",  # no Command Field
], ids=["truncated", "outside-group", "no-command-field"])
def test_malformed_command_sets_are_refused(data: bytes) -> None:
    with pytest.raises(dimse.CommandError):
        dimse.read_command(data)


# -- over the wire -------------------------------------------------------------------------

def test_role_selection_and_async_window_are_negotiated(node_factory, instance) -> None:
    """Proposed as SCU only, with 4 operations at a time: accepted with the defaults (no role
    reply, as pynetdicom's acceptor does; operations one at a time), and the store works."""
    node = node_factory()
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = CTImageStorage
    role.scu_role = True
    role.scp_role = False
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 4
    window.maximum_number_operations_performed = 4
    peer = RawPeer(node.port, CTImageStorage, (role, window))
    items = peer.accept.user_information.user_data
    names = {type(i).__name__ for i in items}
    assert "SCP_SCU_RoleSelectionSubItem" not in names
    assert "AsynchronousOperationsWindowSubItem" not in names
    assert peer.accept.presentation_context[0].result == 0x00
    uid, data = _dataset_bytes(instance)
    peer.send(pdata(1, c_store_command(CTImageStorage, uid), command=True, last=True))
    for start in range(0, len(data), 16000):
        piece = data[start:start + 16000]
        peer.send(pdata(1, piece, command=False, last=start + 16000 >= len(data)))
    answer = peer.response()
    assert (answer.CommandField, answer.Status) == (0x8001, 0x0000)
    assert peer.release() == 0x06  # A-RELEASE-RP
    assert node.store().has_instance(uid)


def test_unsupported_service_is_answered_and_the_association_goes_on(node_factory) -> None:
    """A C-FIND on a storage context: its dataset is read and dropped, the answer is 0x0211
    (unrecognised operation), and the next request on the association is served."""
    node = node_factory()
    peer = RawPeer(node.port, CTImageStorage)
    peer.send(pdata(1, _command(0x0020, CTImageStorage, dataset=True), True, True))
    peer.send(pdata(1, b"\x08\x00\x52\x00\x06\x00STUDY ", command=False, last=True))
    answer = peer.response()
    assert (answer.CommandField, answer.Status, answer.MessageIDBeingRespondedTo) == (
        0x8020, 0x0211, 7)
    peer.send(pdata(1, _command(0x0030, Verification, dataset=False, message_id=8), True, True))
    answer = peer.response()
    assert (answer.CommandField, answer.Status, answer.MessageIDBeingRespondedTo) == (
        0x8030, 0x0000, 8)
    assert peer.release() == 0x06


def test_store_on_the_verification_context_is_refused(node_factory, instance) -> None:
    node = node_factory()
    peer = RawPeer(node.port, Verification)
    uid, data = _dataset_bytes(instance)
    peer.send(pdata(1, c_store_command(CTImageStorage, uid), True, True))
    peer.send(pdata(1, data[:8000], command=False, last=True))
    assert peer.response().Status == 0x0122  # SOP class not supported
    assert peer.release() == 0x06
    assert not node.store().has_instance(uid)


def test_pdu_above_max_pdu_size_gets_an_abort(node_factory, instance) -> None:
    node = node_factory({"network": {"max_pdu_size": 16384}})
    peer = RawPeer(node.port, CTImageStorage)
    assert peer.accept.user_information.maximum_length == 16384
    uid, data = _dataset_bytes(instance)
    peer.send(pdata(1, c_store_command(CTImageStorage, uid), True, True))
    peer.send(pdata(1, data + b"\0" * 20000, command=False, last=False))
    pdu_type, raw = _read_pdu(peer.sock)
    assert pdu_type == 0x07 and raw[9] == 0x06  # A-ABORT, invalid PDU parameter value
    assert not list((node.data_dir / "spool" / ".tmp").iterdir())
    assert "network.max_pdu_size" in node.log()


def test_request_uid_that_is_not_ascii_is_refused_as_a_mismatch(node_factory, instance) -> None:
    node = node_factory()
    peer = RawPeer(node.port, CTImageStorage)
    _, data = _dataset_bytes(instance)
    peer.send(pdata(1, c_store_command(CTImageStorage, "1.2.\u00e9.4"), True, True))
    peer.send(pdata(1, data, command=False, last=True))
    assert peer.response().Status == 0xA900
    assert peer.release() == 0x06
    assert "Traceback" not in node.log()
