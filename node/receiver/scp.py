"""C-ECHO and C-STORE SCP, in pynetdicom's event-handler style.

A C-STORE is answered with Success only after the instance is in the spool (fsynced) and
recorded in the job store. Each failure gets its own status and one log line that names the
problem, never patient data. Handlers catch everything, so one bad instance or association
never stops the others.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
import zlib

from pydicom.uid import DeflatedExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from node import metrics
from node.config import Config
from node.receiver import status
from node.receiver.contexts import scp_contexts
from node.receiver.part10 import file_header
from node.receiver.spool import InvalidUIDError, Spool
from node.receiver.structure import MalformedDatasetError, check_encoding
from node.store.jobstore import InstanceRecord, JobStore, Recorded

log = logging.getLogger("radnode.receiver")

# A-ASSOCIATE-RJ: rejected-permanent, service-user, no-reason-given.
_REJECT_ADDRESS = (0x01, 0x01, 0x01)
_DUL_LOOP_DELAY = 0.0005


class StorageSCP:
    """The node's DICOM listener: start() returns at once, stop() closes it."""

    def __init__(self, config: Config, store: JobStore, spool: Spool) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self._networks = [ipaddress.ip_network(a, strict=False) for a in config.access.addresses]
        self._server: ThreadedAssociationServer | None = None
        self.ae = self._make_ae()

    def _make_ae(self) -> AE:
        node, net, access = self.config.node, self.config.network, self.config.access
        ae = AE(ae_title=node.ae_title)
        ae.supported_contexts = scp_contexts()
        ae.maximum_associations = node.max_associations
        ae.maximum_pdu_size = net.max_pdu_size
        ae.acse_timeout = net.acse_timeout
        ae.dimse_timeout = net.dimse_timeout
        ae.network_timeout = net.network_timeout
        ae.require_called_aet = access.check_called_ae_title
        ae.require_calling_aet = list(access.calling_ae_titles)
        return ae

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the listener is not running")
        return int(self._server.server_address[1])

    def start(self) -> None:
        node, access = self.config.node, self.config.access
        if not access.calling_ae_titles and not access.addresses:
            log.warning(
                "access control is open: any calling AE title from any address may store; "
                "set access.calling_ae_titles and access.addresses to restrict it"
            )
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_connection),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        self._server = self.ae.start_server(
            (node.host, node.port),
            block=False,
            evt_handlers=handlers,
            ssl_context=self._ssl_context(),
        )
        log.info(
            "listening as %s on %s:%d%s (max %d associations)",
            node.ae_title, node.host, self.port,
            " with TLS" if self.config.tls.enabled else "", node.max_associations,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _ssl_context(self) -> ssl.SSLContext | None:
        tls = self.config.tls
        if not tls.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(
            self.config.path(tls.certificate), self.config.path(tls.private_key)
        )
        if tls.ca_certificates:
            context.load_verify_locations(self.config.path(tls.ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED if tls.verify_client else ssl.CERT_NONE
        return context

    # -- association events ----------------------------------------------------------------

    def _on_connection(self, event: Event) -> None:
        # pynetdicom's DUL thread sleeps 1 ms whenever it finds nothing to do, which adds up
        # to ~0.3 s per 300 instances; 0.5 ms halves that at a small idle CPU cost.
        event.assoc.dul._run_loop_delay = _DUL_LOOP_DELAY
        # Accepted sockets block without a timeout (pynetdicom sets network_timeout on the
        # listening socket only), so a peer that stops in the middle of a PDU would hold its
        # thread forever: give the connection itself the timeout.
        sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
        if sock is not None:
            sock.settimeout(self.config.network.network_timeout)

    def _on_requested(self, event: Event) -> None:
        if not self._networks:
            return
        address = event.assoc.requestor.address
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        if ip is None or not any(ip in network for network in self._networks):
            log.warning("association from %s rejected: address not in access.addresses", address)
            metrics.inc("radnode_associations_total", result="rejected")
            event.assoc.acse.send_reject(*_REJECT_ADDRESS)
            event.assoc.kill()  # waits until the A-ASSOCIATE-RJ is on the wire

    def _on_accepted(self, event: Event) -> None:
        requestor = event.assoc.requestor
        log.info("association accepted from %s (%s)", requestor.ae_title, requestor.address)
        metrics.inc("radnode_associations_total", result="accepted")

    def _on_rejected(self, event: Event) -> None:
        requestor = event.assoc.requestor
        log.warning(
            "association from %s (%s) rejected: calling or called AE title not allowed",
            requestor.ae_title, requestor.address,
        )
        metrics.inc("radnode_associations_total", result="rejected")

    def _on_aborted(self, event: Event) -> None:
        log.warning("association from %s aborted", event.assoc.requestor.address)

    def _on_echo(self, event: Event) -> int:
        return status.SUCCESS

    # -- C-STORE ---------------------------------------------------------------------------

    def _on_store(self, event: Event) -> int:
        calling = event.assoc.requestor.ae_title
        try:
            return self._store(event, calling)
        except Exception:
            log.exception("storing an instance from %s failed unexpectedly", calling)
            return status.OUT_OF_RESOURCES

    def _store(self, event: Event, calling: str) -> int:
        request = event.request
        req_class = str(request.AffectedSOPClassUID or "")
        req_instance = str(request.AffectedSOPInstanceUID or "")
        floor = self.config.storage.min_free_mb * 1024 * 1024
        if floor and self.spool.free_bytes() < floor:
            log.error(
                "refused %s from %s: spool free space below storage.min_free_mb (%d MB)",
                req_instance, calling, self.config.storage.min_free_mb,
            )
            return status.OUT_OF_RESOURCES
        syntax = event.context.transfer_syntax
        stream = event.request.DataSet.getbuffer()
        try:
            data = stream
            if syntax == DeflatedExplicitVRLittleEndian:
                data = _inflate(stream)
            found = check_encoding(data, syntax.is_implicit_VR, syntax.is_little_endian,
                                   _IDENTITY_TAGS)
        except (MalformedDatasetError, zlib.error) as exc:
            log.error("refused %s from %s: unreadable dataset (%s)", req_instance, calling, exc)
            return status.CANNOT_UNDERSTAND
        header = {keyword: _text(found.get(tag, b"")) for tag, keyword in _IDENTITY.items()}
        if header["SOPClassUID"] != req_class or header["SOPInstanceUID"] != req_instance:
            log.error(
                "refused %s from %s: dataset SOP class/instance (%s, %s) differ from the request"
                " (%s, %s)", req_instance, calling, header["SOPClassUID"] or "empty",
                header["SOPInstanceUID"] or "empty", req_class, req_instance,
            )
            return status.DATASET_MISMATCH
        try:
            relative = Spool.relative_path(
                header["StudyInstanceUID"], header["SeriesInstanceUID"], req_instance
            )
        except InvalidUIDError as exc:
            log.error("refused %s from %s: %s", req_instance or "instance", calling, exc)
            return status.INVALID_UID
        if self.store.has_instance(req_instance):
            log.debug("duplicate %s from %s: already stored", req_instance, calling)
            return status.SUCCESS
        head = file_header(req_class, req_instance, syntax, calling)
        size = self.spool.write(relative, head, stream)
        outcome = self.store.record_instance(
            InstanceRecord(
                sop_instance_uid=req_instance,
                sop_class_uid=req_class,
                series_uid=header["SeriesInstanceUID"],
                study_uid=header["StudyInstanceUID"],
                modality=header["Modality"],
                path=relative,
                size=size,
                transfer_syntax=str(event.context.transfer_syntax),
                calling_ae=calling,
            ),
            late_policy=self.config.completion.late_instance_policy,
        )
        if outcome is not Recorded.DUPLICATE:
            metrics.inc("radnode_instances_received_total")
            metrics.inc("radnode_bytes_received_total", size)
        if outcome is Recorded.REOPENED:
            log.info("late instance %s re-opened series %s", req_instance,
                     header["SeriesInstanceUID"])
        elif outcome is Recorded.LATE_IGNORED:
            log.info("late instance %s stored; series %s stays complete (policy ignore)",
                     req_instance, header["SeriesInstanceUID"])
        return status.SUCCESS


# The attributes that place an instance, read from the encoded dataset (all ASCII: UI, CS).
_IDENTITY = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080060: "Modality",
}
_IDENTITY_TAGS = frozenset(_IDENTITY)


# A deflated dataset is inflated in memory to be checked; a few MB can claim gigabytes.
MAX_INFLATED_BYTES = 1 << 30
_INFLATE_CHUNK = 1 << 24


def _inflate(stream: bytes | memoryview) -> bytes:
    """The inflated dataset; refuses one above MAX_INFLATED_BYTES after counting its size in
    chunks (so a deflate bomb costs CPU, never memory)."""
    counter = zlib.decompressobj(-zlib.MAX_WBITS)
    size, pending = 0, bytes(stream)
    while True:
        out = counter.decompress(pending, _INFLATE_CHUNK)
        size += len(out)
        if size > MAX_INFLATED_BYTES:
            raise MalformedDatasetError(
                f"deflated dataset inflates to more than {MAX_INFLATED_BYTES >> 20} MB")
        pending = counter.unconsumed_tail
        if not out and not pending:
            break
    return zlib.decompress(stream, -zlib.MAX_WBITS)


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace").strip("\0 ")
