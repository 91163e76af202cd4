"""C-ECHO and C-STORE SCP: the node's handlers for the events of each association.

A C-STORE is answered with Success only after the instance is in the spool (fsynced) and
recorded in the job store. The dataset is written to a temporary spool file while it arrives
and checked there before it is renamed into place. Each failure gets its own status and one
log line that names the problem, never patient data. Handlers catch everything, so one bad
instance or association never stops the others.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import ssl
import zlib

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian
from pynetdicom.sop_class import Verification

from node import metrics
from node.config import Config
from node.receiver import status
from node.receiver.association import AssociationSettings, StoreRequest
from node.receiver.contexts import scp_contexts
from node.receiver.negotiation import (
    REJECT_CALLED_AE_TITLE,
    REJECT_CALLING_AE_TITLE,
    REJECT_NO_REASON,
    AssociationRequest,
)
from node.receiver.part10 import decode_text, file_header
from node.receiver.server import AssociationServer
from node.receiver.spool import InvalidUIDError, Spool, SpoolFile
from node.receiver.structure import MalformedDatasetError, check_encoding
from node.store.jobstore import InstanceRecord, JobStore, Recorded

log = logging.getLogger("radnode.receiver")

class StorageSCP:
    """The node's DICOM listener: start() returns at once, stop() closes it."""

    def __init__(self, config: Config, store: JobStore, spool: Spool) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self._networks = [ipaddress.ip_network(a, strict=False) for a in config.access.addresses]
        self._calling = {t.strip() for t in config.access.calling_ae_titles}
        self._server: AssociationServer | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the listener is not running")
        return self._server.port

    def start(self) -> None:
        node, net, access = self.config.node, self.config.network, self.config.access
        if not access.calling_ae_titles and not access.addresses:
            log.warning(
                "access control is open: any calling AE title from any address may store; "
                "set access.calling_ae_titles and access.addresses to restrict it"
            )
        settings = AssociationSettings(
            acse_timeout=net.acse_timeout,
            dimse_timeout=net.dimse_timeout,
            network_timeout=net.network_timeout,
            max_pdu_length=net.max_pdu_size,
            contexts=scp_contexts(),
        )
        self._server = AssociationServer((node.host, node.port), settings, self,
                                         node.max_associations, self._ssl_context())
        self._server.start()
        log.info(
            "listening as %s on %s:%d%s (max %d associations)",
            node.ae_title, node.host, self.port,
            " with TLS" if self.config.tls.enabled else "", node.max_associations,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
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

    def on_requested(self, request: AssociationRequest) -> tuple[int, int, int] | None:
        refusal = self._refusal(request)
        if refusal is not None:
            metrics.inc("radnode_associations_total", result="rejected")
        return refusal

    def _refusal(self, request: AssociationRequest) -> tuple[int, int, int] | None:
        if self._networks:
            try:
                ip = ipaddress.ip_address(request.address)
            except ValueError:
                ip = None
            if ip is None or not any(ip in network for network in self._networks):
                log.warning("association from %s rejected: address not in access.addresses",
                            request.address)
                return REJECT_NO_REASON
        if self._calling and request.calling_ae_title not in self._calling:
            log.warning("association from %s (%s) rejected: calling AE title not in "
                        "access.calling_ae_titles", request.calling_ae_title, request.address)
            return REJECT_CALLING_AE_TITLE
        if (self.config.access.check_called_ae_title
                and request.called_ae_title != self.config.node.ae_title):
            log.warning("association from %s (%s) rejected: called AE title %s is not "
                        "node.ae_title", request.calling_ae_title, request.address,
                        request.called_ae_title)
            return REJECT_CALLED_AE_TITLE
        return None

    def on_accepted(self, request: AssociationRequest) -> None:
        log.info("association accepted from %s (%s)", request.calling_ae_title,
                 request.address)
        metrics.inc("radnode_associations_total", result="accepted")

    def on_aborted(self, request: AssociationRequest) -> None:
        log.warning("association from %s aborted", request.address)

    def on_echo(self, request: AssociationRequest) -> int:
        return status.SUCCESS

    # -- C-STORE ---------------------------------------------------------------------------

    def on_store(self, request: StoreRequest) -> _Instance | int:
        calling = request.association.calling_ae_title
        instance = request.command.affected_sop_instance_uid
        if request.context.abstract_syntax == Verification:
            log.error("refused %s from %s: C-STORE on the Verification context",
                      instance or "instance", calling)
            return status.SOP_CLASS_NOT_SUPPORTED
        floor = self.config.storage.min_free_mb * 1024 * 1024
        try:
            if floor and self.spool.free_bytes() < floor:
                log.error(
                    "refused %s from %s: spool free space below storage.min_free_mb (%d MB)",
                    instance, calling, self.config.storage.min_free_mb,
                )
                return status.OUT_OF_RESOURCES
            return _Instance(self, request)
        except Exception:
            log.exception("storing an instance from %s failed unexpectedly", calling)
            return status.OUT_OF_RESOURCES


class _Instance:
    """One C-STORE's dataset on its way into the spool: written under the spool's temporary
    folder behind its file header as it arrives, checked, then committed or discarded."""

    def __init__(self, scp: StorageSCP, request: StoreRequest) -> None:
        self.scp = scp
        self.request = request
        command = request.command
        self.file: SpoolFile | None = scp.spool.open()
        head = file_header(command.affected_sop_class_uid, command.affected_sop_instance_uid,
                           request.transfer_syntax, request.association.calling_ae_title)
        self.head_size = len(head)
        self.file.write(head)

    def write(self, data: memoryview) -> None:
        if self.file is None:
            return
        try:
            self.file.write(data)
        except OSError as exc:  # disk full or failing: refuse this one, keep the association
            log.error("refused %s from %s: writing the spool failed (%s)",
                      self.request.command.affected_sop_instance_uid,
                      self.request.association.calling_ae_title,
                      exc.strerror or type(exc).__name__)
            self.discard()

    def discard(self) -> None:
        if self.file is not None:
            self.file.discard()
            self.file = None

    def finish(self) -> int:
        calling = self.request.association.calling_ae_title
        if self.file is None:  # a write failed (and was logged)
            return status.OUT_OF_RESOURCES
        try:
            return self._finish(calling)
        except Exception:
            log.exception("storing an instance from %s failed unexpectedly", calling)
            return status.OUT_OF_RESOURCES
        finally:
            self.discard()  # no-op once committed

    def _identity(self, syntax: UID) -> dict[int, bytes]:
        """Check the dataset as written (mapped, not read back) and return its identity."""
        assert self.file is not None
        mapped = self.file.map()
        assert mapped is not None  # the header is there
        data: bytes | memoryview = memoryview(mapped)[self.head_size:]
        try:
            if syntax == DeflatedExplicitVRLittleEndian:
                data = _inflate(data)
            return check_encoding(data, syntax.is_implicit_VR, syntax.is_little_endian,
                                  _IDENTITY_TAGS)
        finally:
            del data
            with contextlib.suppress(BufferError):  # a view outlives the check (in a
                mapped.close()  # traceback): the garbage collector closes it then

    def _finish(self, calling: str) -> int:
        assert self.file is not None
        command = self.request.command
        req_class = command.affected_sop_class_uid
        req_instance = command.affected_sop_instance_uid
        syntax = UID(self.request.transfer_syntax)
        try:
            found = self._identity(syntax)
        except (MalformedDatasetError, zlib.error) as exc:
            log.error("refused %s from %s: unreadable dataset (%s)", req_instance, calling, exc)
            return status.CANNOT_UNDERSTAND
        header = {keyword: decode_text(found.get(tag, b"")) for tag, keyword in _IDENTITY.items()}
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
        store = self.scp.store
        if store.has_instance(req_instance):
            log.debug("duplicate %s from %s: already stored", req_instance, calling)
            return status.SUCCESS
        size = self.file.commit(relative)
        self.file = None
        outcome = store.record_instance(
            InstanceRecord(
                sop_instance_uid=req_instance,
                sop_class_uid=req_class,
                series_uid=header["SeriesInstanceUID"],
                study_uid=header["StudyInstanceUID"],
                modality=header["Modality"],
                path=relative,
                size=size,
                transfer_syntax=str(syntax),
                calling_ae=calling,
            ),
            late_policy=self.scp.config.completion.late_instance_policy,
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

