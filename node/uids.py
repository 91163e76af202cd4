"""UIDs: the only attribute text that ever becomes part of a path, and the UIDs the node mints.

Paths in the spool are built from UIDs that pass :func:`is_valid_uid` (PS3.5 9.1: digits and
dots, no empty or leading-zero components, at most 64 characters), so ``..``, ``/`` or any other
character can never reach the filesystem.
"""

from __future__ import annotations

import re
import uuid

_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")

# Namespace for the node's derived UIDs: fixed forever, so re-runs reproduce the same UIDs.
_NAMESPACE = uuid.UUID("6a0c3f3e-5b7e-4f21-9d3a-2f1d6c1b9e57")


def is_valid_uid(value: object) -> bool:
    """True for a syntactically valid DICOM UID."""
    return isinstance(value, str) and 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def derive_uid(*parts: str, root: str = "2.25.") -> str:
    """A UID that depends only on ``parts``: the same inputs always give the same UID.

    With the default root this is the ``2.25.<uuid as integer>`` form of PS3.5 B.2; another
    root gets the UUID's integer cut to fit 64 characters.
    """
    value = uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).int
    if root == "2.25.":
        return f"2.25.{value}"
    digits = str(value)[: 64 - len(root)].lstrip("0") or "1"
    return root + digits
