"""Classifier output as one type the SR writer consumes (TID 1501 certainty of finding)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from node.measure.results import ClassProbability


def class_probabilities(
    names: Sequence[str],
    probabilities: Sequence[float] | np.ndarray,
    thresholds: float | Sequence[float] | None = None,
) -> tuple[ClassProbability, ...]:
    """Pair each class name with its probability (and present/absent where a threshold is set).

    Probabilities must be finite and within [0, 1] (a rounding slack of 1e-6 is clipped): a
    model that emits logits has to be post-processed first, and silently passing them on would
    put nonsense into the report.
    """
    probs = np.asarray(probabilities, dtype=np.float64).ravel()
    if len(probs) != len(names):
        raise ValueError(f"{len(names)} class names but {len(probs)} probabilities")
    if isinstance(thresholds, Sequence):
        if len(thresholds) != len(names):
            raise ValueError(f"{len(names)} class names but {len(thresholds)} thresholds")
        ths: list[float | None] = [float(t) for t in thresholds]
    else:
        ths = [None if thresholds is None else float(thresholds)] * len(names)
    out = []
    for index, (name, p, th) in enumerate(zip(names, probs, ths, strict=True)):
        if not math.isfinite(p) or p < -1e-6 or p > 1 + 1e-6:
            raise ValueError(f"class {name!r}: probability {p} is not within [0, 1]")
        probability = min(max(float(p), 0.0), 1.0)
        present = None if th is None else probability >= th
        out.append(
            ClassProbability(
                index=index, name=str(name), probability=probability, threshold=th,
                present=present
            )
        )
    return tuple(out)
