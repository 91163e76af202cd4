"""Running the session over a prepared input: whole volume, slice by slice, or sliding window.

Inside this module tensors are channels-first without batch, ``(C, D, H, W)`` float32; the
manifest's layout is applied only at the session boundary. Mirroring test-time augmentation
averages the raw outputs over every combination of the declared axes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

from node.inference.manifest import LAYOUTS_2D, Manifest
from node.inference.runtime import LoadedModel

_NP_DTYPES = {
    "float32": np.float32, "float16": np.float16, "int16": np.int16, "uint8": np.uint8,
    "int32": np.int32, "int64": np.int64,
}


class Predictor:
    """Calls the session on a batch ``(B, C, *spatial)`` and returns ``(B, C_out, *spatial)``
    (or ``(B, C_out)`` for classification, the raw array for boxes)."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.manifest: Manifest = model.package.manifest
        self.stage = model.stage
        spec = self.stage.input
        self.channels_last = spec.layout in ("NHWC", "NDHWC")
        self.dtype = _NP_DTYPES[spec.dtype]
        self.spatial = 2 if spec.layout in LAYOUTS_2D else 3
        out = self.stage.output
        self.spatial_output = out.kind != "classification" and out.format != "boxes"
        self.labelmap = out.activation == "labelmap"
        # The manifest's flag outputs, fetched with the labels of the last stage (a manifest
        # allows flags only on a one-stage segmentation run whole); the last call's masks are
        # kept in ``flag_masks`` by output name, (B, *spatial) bool.
        last = self.stage is self.manifest.stages[-1]
        self.flag_outputs = tuple(f.output for f in self.manifest.flags) if last else ()
        self.flag_masks: dict[str, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        axes = self.stage.run.mirror_axes
        if not axes:
            return self._once(batch)
        offset = 2 - (3 - self.spatial)  # spatial axis a (0=D, 1=H, 2=W) -> tensor axis
        total: np.ndarray | None = None
        flips = [c for n in range(len(axes) + 1) for c in itertools.combinations(axes, n)]
        for combo in flips:
            tensor_axes = tuple(offset + a for a in combo)
            x = np.flip(batch, tensor_axes) if combo else batch
            y = self._once(np.ascontiguousarray(x))
            if combo and self.spatial_output:
                y = np.flip(y, tensor_axes)
            if total is None:
                total = y.astype(np.float32, copy=True)
            else:
                total += y
        assert total is not None
        total *= 1.0 / len(flips)
        return total

    def _once(self, batch: np.ndarray) -> np.ndarray:
        x = np.moveaxis(batch, 1, -1) if self.channels_last else batch
        x = np.ascontiguousarray(x, dtype=self.dtype)
        feeds = {self.stage.input.name: x}
        if self.flag_outputs:
            y, *masks = self.model.run(feeds, self.flag_outputs)
            self.flag_masks = {name: self._flag_mask(name, np.asarray(m), batch)
                               for name, m in zip(self.flag_outputs, masks, strict=True)}
        else:
            (y,) = self.model.run(feeds)
        y = np.asarray(y)
        if not self.spatial_output:
            return y
        n = batch.shape[0]
        if self.labelmap and y.ndim == self.spatial + 1:  # (B, *spatial): add the channel axis
            y = y[:, None]
        elif self.channels_last:
            y = np.moveaxis(y, -1, 1)
        if y.ndim != self.spatial + 2 or y.shape[0] != n or y.shape[2:] != batch.shape[2:]:
            raise RuntimeError(
                f"model {self.manifest.name}: output {self.stage.output.name} has shape "
                f"{y.shape}; expected batch {n} and spatial size {batch.shape[2:]}"
            )
        return y if y.dtype == np.float32 or self.labelmap else y.astype(np.float32)

    def _flag_mask(self, name: str, m: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """A flag output, ``(B, 1, *spatial)``, ``(B, *spatial)`` or channels-last, as a
        ``(B, *spatial)`` bool mask (non-zero: the model could not decide the voxel)."""
        n, spatial = batch.shape[0], batch.shape[2:]
        axis = -1 if self.channels_last else 1
        if m.ndim == self.spatial + 2 and m.shape[axis] == 1:  # its one channel
            m = np.squeeze(m, axis=axis)
        if m.shape != (n, *spatial):
            raise RuntimeError(
                f"model {self.manifest.name}: flag output {name} has shape {m.shape}; expected "
                f"one channel, batch {n} and spatial size {spatial}"
            )
        return m != 0


def run_whole(predict: Predictor, x: np.ndarray) -> np.ndarray:
    """``x`` (C, D, H, W) in one call; returns (C_out, D, H, W) (or the raw non-spatial output)."""
    y = predict(x[None])
    return y[0] if predict.spatial_output else y


def run_slicewise(predict: Predictor, x: np.ndarray, batch_size: int
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """Yields ``(k0, y)`` with ``y`` (C_out, B, H, W) for slices k0..k0+B, so a caller can
    reduce each batch (argmax) without holding every probability."""
    depth = x.shape[1]
    for k0 in range(0, depth, batch_size):
        batch = np.moveaxis(x[:, k0 : k0 + batch_size], 1, 0)  # (B, C, H, W)
        y = predict(batch)
        yield k0, (np.moveaxis(y, 0, 1) if predict.spatial_output else y)


def run_sliding_window(
    predict: Predictor,
    x: np.ndarray,
    patch: tuple[int, int, int],
    overlap: float,
    sigma: float,
    batch_size: int,
) -> np.ndarray:
    """Patches with ``overlap``, blended with a Gaussian importance map; (C_out, D, H, W)."""
    shape = x.shape[1:]
    pad = [(0, max(0, p - n)) for p, n in zip(patch, shape, strict=True)]
    if any(after for _, after in pad):
        x = np.pad(x, [(0, 0), *pad], mode="constant", constant_values=float(x.min()))
    padded = x.shape[1:]
    starts = [_starts(n, p, overlap) for n, p in zip(padded, patch, strict=True)]
    weight_map = gaussian_map(patch, sigma)
    out: np.ndarray | None = None
    weight = np.zeros(padded, dtype=np.float32)
    corners = list(itertools.product(*starts))
    for b0 in range(0, len(corners), batch_size):
        chunk = corners[b0 : b0 + batch_size]
        batch = np.stack([_crop(x, c, patch) for c in chunk])
        y = predict(batch)
        if out is None:
            out = np.zeros((y.shape[1], *padded), dtype=np.float32)
        for corner, pred in zip(chunk, y, strict=True):
            region = tuple(slice(c, c + p) for c, p in zip(corner, patch, strict=True))
            pred *= weight_map
            out[(slice(None), *region)] += pred
            weight[region] += weight_map
    assert out is not None
    out /= weight
    d, h, w = shape
    return out[:, :d, :h, :w]


def gaussian_map(patch: tuple[int, ...], sigma: float) -> np.ndarray:
    """Importance of each voxel of a patch: a Gaussian of ``sigma`` x size per axis, highest at
    the centre, never zero; flat when ``sigma`` is 0."""
    if sigma <= 0:
        return np.ones(patch, dtype=np.float32)
    axes = []
    for p in patch:
        r = np.arange(p, dtype=np.float64) - (p - 1) / 2
        axes.append(np.exp(-0.5 * (r / (sigma * p)) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g /= g.max()
    return np.maximum(g, 1e-3).astype(np.float32)


def _starts(n: int, p: int, overlap: float) -> list[int]:
    if n <= p:
        return [0]
    step = max(1.0, p * (1.0 - overlap))
    count = int(np.ceil((n - p) / step)) + 1
    return sorted({round(float(v)) for v in np.linspace(0, n - p, count)})


def _crop(x: np.ndarray, corner: tuple[int, ...], patch: tuple[int, ...]) -> np.ndarray:
    return x[(slice(None), *(slice(c, c + p) for c, p in zip(corner, patch, strict=True)))]

