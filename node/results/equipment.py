"""Who made a result: the model as Contributing Equipment and device observer, and the fixes
that make highdicom's output depend only on our inputs (no clock, no random UIDs)."""

from __future__ import annotations

import datetime as dt

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DA, DT, TM

from node import __version__
from node.uids import derive_uid


def model_device_uid(model: str, version: str, root: str = "2.25.") -> str:
    """The device UID of one model version: IHE AIR's Device UID and the SR device observer UID.

    It changes whenever the name or version changes, and only then.
    """
    return derive_uid("radnode-model-device", model, version, root=root)


def algorithm_identification(model: str, version: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=model, family=codes.cid7162.ArtificialIntelligence, version=version
    )


def model_equipment(
    manufacturer: str, model: str, version: str, device_uid: str, when: dt.datetime,
    description: str = "",
) -> hd.ContributingEquipment:
    """The model as processing equipment (IHE AI Results: manufacturer, model, version, UID).

    The model's device UID goes into Device Serial Number: Device UID (0018,1002) is not an
    attribute of the Contributing Equipment Sequence (dciodvfy flags the object as Standard
    Extended), while the serial number is, and a UID that changes with the version fits there.
    """
    return hd.ContributingEquipment(
        manufacturer=manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=model,
        software_versions=version,
        device_serial_number=device_uid,
        contribution_datetime=when,
        contribution_description=(description or f"AI model {model} {version} (radnode "
                                  f"{__version__})")[:1024],
    )


def pin_generated_values(ds: Dataset, when: dt.datetime, uid_root: str = "2.25.") -> None:
    """Replace what highdicom takes from the clock or the random generator.

    Instance creation date/time and every Contribution DateTime become ``when``; the
    Dimension Organization UID (random in highdicom) is derived from the SOP Instance UID.
    So the same inputs give byte-identical objects.
    """
    ds.InstanceCreationDate = DA(when.date())
    ds.InstanceCreationTime = TM(when.time())
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = DT(when)
    if "DimensionOrganizationSequence" in ds:
        uid = derive_uid(str(ds.SOPInstanceUID), "dimension-organization", root=uid_root)
        for item in ds.DimensionOrganizationSequence:
            item.DimensionOrganizationUID = uid
        for item in ds.get("DimensionIndexSequence", []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = uid
