"""Which SOP classes and transfer syntaxes the node accepts, and offers when it sends."""

from __future__ import annotations

from pydicom import uid
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # made at run time

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"

# Uncompressed, deflated, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K and RLE.
ACCEPTED_TRANSFER_SYNTAXES: list[str] = [
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
]


def storage_sop_classes() -> list[str]:
    """Every storage SOP class pynetdicom knows, plus Label Map Segmentation Storage."""
    classes = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    if LABEL_MAP_SEGMENTATION_STORAGE not in classes:
        classes.append(LABEL_MAP_SEGMENTATION_STORAGE)
    return classes


def scp_contexts() -> list[PresentationContext]:
    """Contexts the receiver supports: verification and all storage classes."""
    contexts = [build_context(Verification)]
    contexts += [build_context(c, ACCEPTED_TRANSFER_SYNTAXES) for c in storage_sop_classes()]
    return contexts
