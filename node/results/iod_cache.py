"""A cache in front of highdicom's IOD table look-up.

highdicom asks, for every source image of a SEG, whether its SOP class allows NumberOfFrames
(``_standard_utils.is_multiframe_image`` -> ``is_attribute_in_iod``), walking the standard's
module tables each time: 1.6 ms per image, half a second for a 300-slice CT. The answer depends
only on (attribute, SOP class, excluded path elements), so it is cached. Installed once, when
``node.results`` is imported; highdicom is pinned (pyproject) to the versions checked here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from highdicom import _standard_utils

_original = _standard_utils.is_attribute_in_iod


@functools.lru_cache(maxsize=4096)
def _cached(attribute: str, sop_class_uid: str, exclude: tuple[str, ...] | None) -> bool:
    return bool(_original(attribute, sop_class_uid, list(exclude) if exclude else exclude))


def is_attribute_in_iod(attribute: str, sop_class_uid: str,
                        exclude_path_elements: Sequence[str] | None = None) -> bool:
    exclude = tuple(exclude_path_elements) if exclude_path_elements is not None else None
    return _cached(attribute, str(sop_class_uid), exclude)


def install() -> None:
    _standard_utils.is_attribute_in_iod = is_attribute_in_iod
