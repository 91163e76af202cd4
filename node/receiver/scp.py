"""C-ECHO and C-STORE SCP: the node's handlers for the events of each association.

A C-STORE is answered with Success only after the instance is in the spool (fsynced) and
recorded in the job store. One SOP Instance UID is stored once: the first copy recorded is
kept; a later copy with the same content gets Success (a re-send), one with other content
gets DIFFERENT_CONTENT and is not stored. The dataset is written to a temporary spool file
while it arrives and checked there before it is renamed into place. Each failure gets its own
status and one log line that names the problem, never patient data. Handlers catch
everything, so one bad instance or association never stops the others.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
import zlib
from dataclasses import replace
from pathlib import Path

import pydicom
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at run time

from node import metrics
from node.config import Config
from node.receiver import status
from node.receiver.association import AssociationSettings, StoreRequest
from node.receiver.contexts import scp_contexts
from node.receiver.inflate import InflateBudget, InflateLimitError, inflated
from node.receiver.negotiation import (
    REJECT_CALLED_AE_TITLE,
    REJECT_CALLING_AE_TITLE,
    REJECT_NO_REASON,
    AssociationRequest,
)
from node.receiver.part10 import decode_text, file_header
from node.receiver.seriesheader import keep_series_record, series_record
from node.receiver.server import AssociationServer, ConnectionLimits
from node.receiver.spool import InvalidUIDError, Spool, SpoolFile, dataset_offset
from node.receiver.structure import MalformedDatasetError, check_encoding
from node.store import InstanceRecord, JobStore, Recorded

log = logging.getLogger("radnode.receiver")

# A SOP Instance UID that is recorded already, sent with other content (another series, other
# pixels, other attributes, or another transfer syntax that does not decode to the same data
# set). PS3.4 B.2.3 Table B.2-1 leaves "Error: Cannot understand" (Cxxx) to the implementation;
# PS3.7 Annex C's "Duplicate SOP Instance" (0x0111) is an N-CREATE status, not a C-STORE one.
DIFFERENT_CONTENT = 0xC002
# Above this size a copy in another transfer syntax is not decoded to be compared: it differs.
_MAX_DECODED_COMPARE = 256 << 20

class StorageSCP:
    """The node's DICOM listener: start() returns at once, stop() closes it."""

    def __init__(self, config: Config, store: JobStore, spool: Spool) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self._networks = [ipaddress.ip_network(a, strict=False) for a in config.access.addresses]
        self._calling = {t.strip() for t in config.access.calling_ae_titles}
        self._server: AssociationServer | None = None
        # deflated datasets being inflated, all associations together (storage.inflate_budget_mb)
        self.inflate_budget = InflateBudget(config.storage.inflate_budget_mb << 20)

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
            max_request_length=net.max_associate_request,
        )
        limits = ConnectionLimits(net.max_pending_connections, net.max_pending_per_address,
                                  net.busy_idle_timeout)
        self._server = AssociationServer((node.host, node.port), settings, self,
                                         node.max_associations, self._ssl_context(), limits)
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
            outcome = self._finish(calling)
            if outcome == status.SUCCESS and self._series_record is not None:
                keep_series_record(self.scp.spool, *self._series_record)
            return outcome
        except InflateLimitError as exc:  # a bound of the deflate path: one line, no traceback
            log.error("refused %s from %s: %s", self.request.command.affected_sop_instance_uid,
                      calling, exc)
            return exc.status
        except Exception:
            log.exception("storing an instance from %s failed unexpectedly", calling)
            return status.OUT_OF_RESOURCES
        finally:
            self.discard()  # no-op once committed

    # (series folder, header record) when this instance's series has no record yet
    _series_record: tuple[str, bytes] | None = None

    def _identity(self, syntax: UID) -> dict[int, bytes]:
        """Check the dataset as written (mapped, not read back) and return its identity;
        take its series' header record on the way if the series has none yet."""
        assert self.file is not None
        if syntax == DeflatedExplicitVRLittleEndian:
            return self._inflated_identity()
        mapped = self.file.map()
        assert mapped is not None  # the header is there
        data = memoryview(mapped)[self.head_size:]
        try:
            found = check_encoding(data, syntax.is_implicit_VR, syntax.is_little_endian,
                                   _IDENTITY_TAGS)
            self._take_series_record(found, data, syntax.is_implicit_VR,
                                     syntax.is_little_endian)
            return found
        finally:
            del data
            with contextlib.suppress(BufferError):  # a view outlives the check (in a
                mapped.close()  # traceback): the garbage collector closes it then

    def _inflated_identity(self) -> dict[int, bytes]:
        """A deflated dataset, inflated once, streaming, into a scratch spool file (bounded
        by storage.max_inflated_mb and storage.inflate_budget_mb), checked there mapped."""
        assert self.file is not None
        command, scp = self.request.command, self.scp
        storage = scp.config.storage
        head = file_header(command.affected_sop_class_uid, command.affected_sop_instance_uid,
                           ExplicitVRLittleEndian)
        floor = storage.min_free_mb << 20
        with inflated(scp.spool, self.file.path, self.head_size, head,
                      storage.max_inflated_mb << 20, scp.inflate_budget,
                      lambda: bool(floor) and scp.spool.free_bytes() < floor) as scratch:
            mapped = scratch.map()
            assert mapped is not None
            data = memoryview(mapped)[len(head):]
            try:
                found = check_encoding(data, False, True, _IDENTITY_TAGS)
                self._take_series_record(found, data, False, True)
                return found
            finally:
                del data
                with contextlib.suppress(BufferError):
                    mapped.close()

    def _take_series_record(self, found: dict[int, bytes], data: memoryview, implicit: bool,
                            little: bool) -> None:
        """Keep (in memory, until the instance is stored) the header record of a series that
        has none, so completion and routing never read or inflate an instance again."""
        try:
            relative = Spool.relative_path(
                *(decode_text(found.get(tag, b"")) for tag in _PLACE_TAGS))
        except InvalidUIDError:
            return  # refused in _finish, with its own log line
        folder = relative.rpartition("/")[0]
        record = series_record(self.scp.spool, folder, data, implicit, little)
        if record is not None:
            self._series_record = (folder, record)

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
        record = InstanceRecord(
            sop_instance_uid=req_instance,
            sop_class_uid=req_class,
            series_uid=header["SeriesInstanceUID"],
            study_uid=header["StudyInstanceUID"],
            modality=header["Modality"],
            path=relative,
            size=0,
            transfer_syntax=str(syntax),
            calling_ae=calling,
        )
        # "recorded? write, rename, record" for one UID at a time: concurrent copies of one
        # instance cannot leave a file that its row does not describe, or a file no row names
        with self.scp.spool.instance_lock(req_instance):
            stored = store.instance(req_instance)
            if stored is not None:
                return self._again(stored, record)
            size = self.file.commit(relative)
            self.file = None
            outcome = store.record_instance(
                replace(record, size=size),
                late_policy=self.scp.config.completion.late_instance_policy,
            )
        if outcome is Recorded.DUPLICATE:  # another process recorded it meanwhile
            log.error("stored %s from %s, but another process had recorded it already",
                      req_instance, calling)
        else:
            metrics.inc("radnode_instances_received_total")
            metrics.inc("radnode_bytes_received_total", size)
        if outcome is Recorded.REOPENED:
            log.info("late instance %s re-opened series %s", req_instance,
                     header["SeriesInstanceUID"])
        elif outcome is Recorded.LATE_IGNORED:
            log.info("late instance %s stored; series %s stays complete (policy ignore)",
                     req_instance, header["SeriesInstanceUID"])
        return status.SUCCESS

    def _again(self, stored: InstanceRecord, record: InstanceRecord) -> int:
        """A SOP Instance UID that is recorded already (called under its lock). The stored copy
        is kept: results may have been made from it. Success when this copy is the same data
        set (a re-send after a lost response or a crash); DIFFERENT_CONTENT when it is not."""
        assert self.file is not None
        uid, calling = record.sop_instance_uid, record.calling_ae
        existing = self.scp.spool.absolute(stored.path)
        if not existing.is_file() and stored.path == record.path:
            # the recorded file was removed by hand: this copy takes its place
            size = self.file.commit(record.path)
            self.file = None
            self.scp.store.replace_instance_file(replace(record, size=size))
            log.warning("stored %s from %s again: its recorded file was missing", uid, calling)
            return status.SUCCESS
        if existing.is_file() and self._same_dataset(existing, stored.transfer_syntax,
                                                     record.transfer_syntax):
            log.debug("duplicate %s from %s: already stored, same content", uid, calling)
            return status.SUCCESS
        log.error(
            "refused %s from %s: SOP Instance UID already stored with different content "
            "(stored: series %s, %s; this copy: series %s, %s); the stored copy is kept",
            uid, calling, stored.series_uid, stored.transfer_syntax, record.series_uid,
            record.transfer_syntax,
        )
        return DIFFERENT_CONTENT

    def _same_dataset(self, existing: Path, stored_syntax: str, syntax: str) -> bool:
        """Whether this copy's data set is the stored one's: byte for byte in the same transfer
        syntax (the File Meta, which names the sender, is not compared); decoded otherwise."""
        assert self.file is not None
        if stored_syntax == syntax:
            try:
                return _same_bytes(existing, self.file, self.head_size)
            except ValueError:  # a file recovery recorded without a group length: decode
                pass
        if max(existing.stat().st_size, self.file.size) > _MAX_DECODED_COMPARE:
            return False
        try:
            return bool(pydicom.dcmread(existing) == pydicom.dcmread(self.file.path))
        except Exception:  # either does not decode: not shown to be the same
            return False


def _same_bytes(existing: Path, file: SpoolFile, head_size: int) -> bool:
    """Compare the data set of a stored file with the one being written (mapped), in 1 MB
    pieces; ValueError when the stored file's File Meta length cannot be read."""
    mapped = file.map()
    assert mapped is not None
    new = memoryview(mapped)[head_size:]
    try:
        with existing.open("rb") as f:
            offset = dataset_offset(f.read(144))
            if os.fstat(f.fileno()).st_size - offset != len(new):
                return False
            f.seek(offset)
            pos = 0
            while pos < len(new):
                chunk = f.read(1 << 20)
                if not chunk or new[pos:pos + len(chunk)] != chunk:
                    return False
                pos += len(chunk)
            return True
    finally:
        new.release()
        with contextlib.suppress(BufferError):
            mapped.close()


# The attributes that place an instance, read from the encoded dataset (all ASCII: UI, CS).
_IDENTITY = {
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080060: "Modality",
}
_IDENTITY_TAGS = frozenset(_IDENTITY)
_PLACE_TAGS = (0x0020000D, 0x0020000E, 0x00080018)  # study, series, instance: its spool path
