"""Previews of a model whose label map holds reported values (split left/right labels, values
up to 60, not consecutive): each value is drawn in its label's colour, both sides alike."""

from __future__ import annotations

import numpy as np
from support.tools import REPO

from node.http.preview import label_colours, render_previews
from node.inference.manifest import load_package


def test_a_31_label_map_with_values_up_to_60_draws_with_the_manifest_colours():
    manifest = load_package(REPO / "models" / "brain_structures_t1").manifest
    reported = manifest.reported_labels
    assert len(reported) == 31 and max(lab.value for lab in reported) == 60
    colours = label_colours(manifest)
    hippocampus = next(lab for lab in manifest.labels if lab.name == "Hippocampus")
    assert colours[17] == colours[53] == hippocampus.colour  # both sides share the colour
    third_ventricle = next(lab for lab in reported if lab.value == 14)  # its reported value
    assert third_ventricle.name == "Third ventricle"
    assert colours[14] == third_ventricle.colour != hippocampus.colour  # not network label 14
    # One 4 x 4 block per reported value on each of 12 slices, on a grey background.
    label_map = np.zeros((12, 64, 64), dtype=np.uint8)
    for n, lab in enumerate(reported):
        row, col = divmod(n, 8)
        label_map[:, 4 + 8 * row: 8 + 8 * row, 4 + 8 * col: 8 + 8 * col] = lab.value
    array = np.full(label_map.shape, 100.0, dtype=np.float32)
    (image, *_) = render_previews(array, label_map, (1.0, 1.0, 1.0), colours, (100.0, 200.0))
    factor = image.shape[0] // 64
    for n, lab in enumerate(reported):
        row, col = divmod(n, 8)
        corner = image[(4 + 8 * row) * factor, (4 + 8 * col) * factor]  # an outline pixel
        assert tuple(int(c) for c in corner) == lab.colour, lab.name
