"""Start-up recovery: what a crash (or a race, before stores of one SOP Instance UID were
serialised) may have left between the spool and the job store."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pydicom

from node.receiver.spool import Spool
from node.store import InstanceRecord, JobStore

log = logging.getLogger("radnode.recovery")


@dataclass(frozen=True)
class Recovery:
    """What start-up recovery did, in files."""

    removed: int  # half-written temporary files, deleted
    recorded: int  # whole files whose row was lost, recorded again
    quarantined: int  # files no row may describe, moved to .quarantine/ (never deleted)


def recover_spool(spool: Spool, store: JobStore, late_policy: str) -> Recovery:
    """Remove half-written files; record whole files the store does not know; quarantine the
    spool files that no row records and none may: a second copy of an instance recorded at
    another path (another series), one whose content does not match its path, an unreadable
    one. Each quarantined file gets a log line, and the total is logged.

    A file at its final name was fsynced before it was renamed, so it is whole; the store may
    lack it only after a power loss between the rename and the commit.
    """
    removed = spool.clean_temporary()
    known = store.known_paths()
    unknown = [relative for relative in spool.files() if relative not in known]
    recorded = quarantined = 0
    for relative in unknown:
        study, series, name = relative.split("/")
        uid = name.removesuffix(".dcm")
        row = store.instance(uid)
        if row is not None:
            moved = spool.quarantine(relative)
            log.warning("recovery: spool file %s duplicates instance %s recorded at %s; "
                        "moved to %s", relative, uid, row.path, moved)
            quarantined += 1
            continue
        try:
            ds = pydicom.dcmread(spool.absolute(relative), stop_before_pixels=True)
            found = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
            record = InstanceRecord(
                sop_instance_uid=uid,
                sop_class_uid=str(ds.SOPClassUID),
                series_uid=series,
                study_uid=study,
                modality=str(ds.get("Modality", "")),
                path=relative,
                size=spool.absolute(relative).stat().st_size,
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            )
        except Exception as exc:
            moved = spool.quarantine(relative)
            log.error("recovery: spool file %s is unreadable (%s); moved to %s", relative,
                      type(exc).__name__, moved)
            quarantined += 1
            continue
        if found != (study, series, uid):
            moved = spool.quarantine(relative)
            log.error("recovery: spool file %s holds another instance than its path names; "
                      "moved to %s", relative, moved)
            quarantined += 1
            continue
        store.record_instance(record, late_policy)
        recorded += 1
    if removed or recorded or quarantined:
        log.info("recovery: removed %d partial files, re-recorded %d instances, quarantined "
                 "%d files", removed, recorded, quarantined)
    return Recovery(removed, recorded, quarantined)
