"""Start-up recovery: what a crash may have left between the spool and the job store."""

from __future__ import annotations

import logging

import pydicom

from node.receiver.spool import Spool
from node.store.jobstore import InstanceRecord, JobStore

log = logging.getLogger("radnode.recovery")


def recover_spool(spool: Spool, store: JobStore, late_policy: str) -> tuple[int, int]:
    """Remove half-written files; record whole files the store does not know.

    Returns (temporary files removed, instances re-recorded). A file at its final name was
    fsynced before it was renamed, so it is whole; the store may lack it only after a power
    loss between the rename and the commit.
    """
    removed = spool.clean_temporary()
    known = store.known_paths()
    recorded = 0
    for relative in spool.files():
        if relative in known:
            continue
        try:
            ds = pydicom.dcmread(spool.absolute(relative), stop_before_pixels=True)
            study, series, name = relative.split("/")
            record = InstanceRecord(
                sop_instance_uid=name.removesuffix(".dcm"),
                sop_class_uid=str(ds.SOPClassUID),
                series_uid=series,
                study_uid=study,
                modality=str(ds.get("Modality", "")),
                path=relative,
                size=spool.absolute(relative).stat().st_size,
                transfer_syntax=str(ds.file_meta.TransferSyntaxUID),
            )
        except Exception as exc:
            log.error("spool file %s is unreadable (%s); left in place", relative,
                      type(exc).__name__)
            continue
        store.record_instance(record, late_policy)
        recorded += 1
    if removed or recorded:
        log.info("recovery: removed %d partial files, re-recorded %d instances", removed, recorded)
    return removed, recorded
