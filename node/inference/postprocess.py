"""From raw model outputs to a clean label map: activation, argmax or threshold, then the
per-label steps of the manifest (minimum size, largest components, absorb, hole filling)."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from node.inference.manifest import LabelSpec, Manifest


def label_dtype(manifest: Manifest) -> type:
    return np.uint8 if max(lab.value for lab in manifest.labels) <= 255 else np.uint16


def softmax_(y: np.ndarray) -> np.ndarray:
    """Softmax over axis 0, in place."""
    y -= y.max(axis=0, keepdims=True)
    np.exp(y, out=y)
    y /= y.sum(axis=0, keepdims=True)
    return y


def sigmoid_(y: np.ndarray) -> np.ndarray:
    """Logistic function, in place."""
    np.negative(y, out=y)
    np.exp(y, out=y)
    y += 1.0
    np.reciprocal(y, out=y)
    return y


def activate_(y: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        return softmax_(y)
    if activation == "sigmoid":
        return sigmoid_(y)
    return y


def decode_segmentation(raw: np.ndarray, manifest: Manifest) -> np.ndarray:
    """(C, *spatial) raw scores (modified in place) to a label map (*spatial).

    softmax (and none: scores the network already activated): argmax over channels (a label's
    ``threshold``, if set, must also be reached);
    sigmoid: each label where its probability reaches its threshold, later labels winning on
    overlap; labelmap: the values as they are (undeclared values may feed ``absorb``).
    """
    out = manifest.output
    dtype = label_dtype(manifest)
    if out.activation == "labelmap":
        return np.rint(raw[0]).astype(dtype) if raw.dtype.kind == "f" else raw[0].astype(dtype)
    _check_channels(raw, manifest)
    activate_(raw, out.activation)
    labels: np.ndarray = np.zeros(raw.shape[1:], dtype=dtype)
    if out.activation == "softmax" or (out.activation == "none" and out.kind == "segmentation"):
        lut: np.ndarray = np.zeros(raw.shape[0], dtype=dtype)
        for lab in manifest.labels:
            lut[lab.channel] = lab.value
        np.take(lut, raw.argmax(axis=0), out=labels)
        for lab in manifest.labels:
            if lab.postprocess.threshold is not None:
                labels[(labels == lab.value) & (raw[lab.channel] < lab.postprocess.threshold)] = 0
    else:
        for lab in manifest.labels:
            t = out.threshold if lab.postprocess.threshold is None else lab.postprocess.threshold
            labels[raw[lab.channel] >= t] = lab.value
    return labels


def _check_channels(raw: np.ndarray, manifest: Manifest) -> None:
    top = max(lab.channel or 0 for lab in manifest.labels)
    if raw.shape[0] <= top:
        raise RuntimeError(
            f"model {manifest.name}: output has {raw.shape[0]} channels but label "
            f"channel {top} is declared"
        )


def clean_labels(labels: np.ndarray, manifest: Manifest, spacing: tuple[float, ...]) -> np.ndarray:
    """Apply each label's post-processing in manifest order, in place; returns ``labels``.

    Removal (minimum size, largest components) sets voxels to 0; ``absorb`` turns voxels of the
    listed raw values that touch the kept label into it; hole filling claims enclosed voxels that
    are background or undeclared. Finally undeclared values become background.
    """
    declared = np.array([lab.value for lab in manifest.labels])
    voxel_mm3 = float(np.prod(spacing))
    for lab in manifest.labels:
        _clean_one(labels, lab, declared, voxel_mm3)
    labels[~np.isin(labels, declared)] = 0
    return labels


def _clean_one(labels: np.ndarray, lab: LabelSpec, declared: np.ndarray, voxel_mm3: float
               ) -> None:
    post = lab.postprocess
    mask = labels == lab.value
    if not mask.any():
        return
    if post.min_size_mm3 > 0 or post.largest_components > 0:
        keep = components(mask, math.ceil(post.min_size_mm3 / voxel_mm3), post.largest_components)
        if post.cut_pieces > 0:
            keep |= cut_pieces(mask & ~keep, int(np.count_nonzero(keep)), post.cut_pieces)
        if post.keep_touching:
            keep |= touching(mask & ~keep, np.isin(labels, post.keep_touching))
        labels[mask & ~keep] = 0
        mask = keep
    if post.absorb:
        absorbable = np.isin(labels, post.absorb)
        if absorbable.any():
            cc = _component_ids(mask | absorbable)
            hit = np.unique(cc[mask])
            grow = absorbable & np.isin(cc, hit[hit > 0])
            labels[grow] = lab.value
            mask |= grow
    if post.fill_holes != "none":
        filled = fill_holes(mask, axial=post.fill_holes == "axial")
        claim = filled & ~mask & ~np.isin(labels, declared)
        labels[claim] = lab.value


def components(mask: np.ndarray, min_voxels: int = 0, largest: int = 0,
               full_connectivity: bool = False) -> np.ndarray:
    """The connected components of ``mask`` (face connectivity, or 26 neighbours with
    ``full_connectivity``) with at least ``min_voxels``, only the ``largest`` biggest if that
    is > 0."""
    image = sitk.RelabelComponent(
        sitk.ConnectedComponent(_image(mask), full_connectivity),
        minimumObjectSize=max(0, min_voxels), sortByObjectSize=True,
    )
    ids = sitk.GetArrayFromImage(image)
    keep = ids > 0
    if largest > 0:
        keep &= ids <= largest
    return keep


def cut_pieces(mask: np.ndarray, kept: int, fraction: float) -> np.ndarray:
    """The components of ``mask`` that touch a face of the volume and hold at least
    ``fraction`` of ``kept`` voxels.

    A connected organ shows as one piece unless the field of view cuts it: then each other
    piece joins it beyond the images, so it reaches their edge. False positives inside the
    volume stay out, however large.
    """
    if not mask.any() or kept == 0:
        return np.zeros_like(mask)
    ids = _component_ids(mask)
    at_edge = np.zeros(mask.shape, dtype=bool)
    for axis in range(mask.ndim):
        face = [slice(None)] * mask.ndim
        for end in (0, -1):
            face[axis] = slice(end, end + 1) if end == 0 else slice(-1, None)
            at_edge[tuple(face)] = True
    sizes = np.bincount(ids.ravel())
    edge_ids = np.unique(ids[at_edge & mask])
    big = [i for i in edge_ids if i > 0 and sizes[i] >= fraction * kept]
    return np.isin(ids, big)


def touching(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that share a face with ``other``."""
    if not mask.any() or not other.any():
        return np.zeros_like(mask)
    beside = other.copy()
    for axis in range(other.ndim):
        for shift in (1, -1):
            beside |= np.roll(other, shift, axis=axis) & _not_wrapped(other.shape, axis, shift)
    ids = _component_ids(mask)
    hit = np.unique(ids[beside & mask])
    return np.isin(ids, hit[hit > 0])


def _not_wrapped(shape: tuple[int, ...], axis: int, shift: int) -> np.ndarray:
    """False on the slab that ``np.roll`` by ``shift`` along ``axis`` wraps around."""
    keep = np.ones(shape[axis], dtype=bool)
    keep[0 if shift > 0 else -1] = False
    return keep.reshape([-1 if a == axis else 1 for a in range(len(shape))])


def _component_ids(mask: np.ndarray) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ConnectedComponent(_image(mask)))


def fill_holes(mask: np.ndarray, axial: bool = False) -> np.ndarray:
    """``mask`` with enclosed background filled, in 3D or slice by slice (array axis 0)."""
    if not axial:
        return sitk.GetArrayFromImage(sitk.BinaryFillhole(_image(mask))).astype(bool)
    # One 2D fill over the slices stacked in a column, a background row between neighbours: a
    # hole never touches its slice's border, so none reaches the separators, while the border
    # background of every slice does (as the image border in a slice-by-slice fill). Same
    # result as slice by slice, in one call instead of one per slice.
    out = mask.copy()
    ks = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
    if ks.size == 0:
        return out
    rows, cols = mask.shape[1:]
    tiled = np.zeros((ks.size, rows + 1, cols), dtype=np.uint8)
    tiled[:, :rows] = mask[ks]
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(_image(tiled.reshape(-1, cols))))
    out[ks] = filled.reshape(ks.size, rows + 1, cols)[:, :rows] > 0
    return out


def _image(mask: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(mask.view(np.uint8) if mask.dtype == np.bool_ else
                                  mask.astype(np.uint8))


def clean_union(labels: np.ndarray, manifest: Manifest, within: np.ndarray | None = None
                ) -> np.ndarray:
    """The manifest's steps on the union of all labels, in place: labels outside ``within``
    (an earlier result's mask on the same grid) become background, then only the largest
    connected component of the union is kept, then enclosed background joins the first label."""
    post = manifest.postprocess
    if within is not None:
        labels[~within.astype(bool)] = 0
    if post.largest_component and labels.any():
        keep = components(labels > 0, largest=1, full_connectivity=post.connectivity == 26)
        labels[~keep] = 0
    if post.fill_holes and labels.any():
        holes = fill_holes(labels > 0) & (labels == 0)
        labels[holes] = manifest.labels[0].value
    return labels
