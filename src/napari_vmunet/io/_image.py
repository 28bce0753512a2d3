"""The image type every reader returns and every writer takes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike


class ImageIOError(ValueError):
    """An image could not be read or written; the message says what to do."""


@dataclass
class ImageData:
    """An image with the geometry needed to show it in physical space and to
    write results back so that they overlay the source in other tools.

    See the module docstring for the axis conventions.
    """

    data: Any  # np.ndarray or a dask array
    axes: str
    scale: tuple[float, ...] = ()
    translate: tuple[float, ...] = ()
    affine: np.ndarray | None = None
    rgb: bool = False
    source: Path | None = None
    meta: dict = field(default_factory=dict)
    units: str | None = None  # 'mm', 'µm' or None (pixels)

    def __post_init__(self) -> None:
        if len(self.axes) != self.data.ndim or set(self.axes) - set('CZYX'):
            raise ValueError(
                f'axes {self.axes!r} do not describe an array of shape '
                f'{tuple(self.data.shape)} (use letters from CZYX)'
            )
        n = len(self.spatial_axes)
        self.scale = tuple(float(s) for s in self.scale) or (1.0,) * n
        self.translate = tuple(float(t) for t in self.translate) or (0.0,) * n
        if len(self.scale) != n or len(self.translate) != n:
            raise ValueError(
                f'scale {self.scale} and translate {self.translate} need one '
                f'value per spatial axis of {self.axes!r}'
            )
        if self.affine is not None:
            self.affine = np.asarray(self.affine, dtype=float)
            if self.affine.shape != (n + 1, n + 1):
                raise ValueError(f'affine must be {n + 1}x{n + 1} for {self.axes!r}')
        if self.source is not None:
            self.source = Path(self.source)

    @property
    def spatial_axes(self) -> str:
        """``axes`` without ``C``: ``'YX'`` or ``'ZYX'``."""
        return self.axes.replace('C', '')

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The shape of the spatial axes; label maps must have this shape."""
        return tuple(
            s for s, a in zip(self.data.shape, self.axes, strict=True) if a != 'C'
        )

    @property
    def channel_axis(self) -> int | None:
        """Index of ``C`` in ``axes``, or None for single-channel images."""
        return self.axes.index('C') if 'C' in self.axes else None

    def world_affine(self) -> np.ndarray:
        """The full spatial voxel->world matrix, from ``affine`` when set,
        else from ``scale`` and ``translate``."""
        if self.affine is not None:
            return self.affine.copy()
        n = len(self.scale)
        out = np.eye(n + 1)
        out[:n, :n] = np.diag(self.scale)
        out[:n, n] = self.translate
        return out

    def to_metadata(self) -> dict:
        """Everything but the pixels, for a napari layer's ``metadata`` so a
        writer can restore the source geometry (see :meth:`from_metadata`)."""
        return {
            'axes': self.axes,
            'shape': tuple(int(s) for s in self.data.shape),
            'dtype': str(self.data.dtype),
            'scale': self.scale,
            'translate': self.translate,
            'affine': None if self.affine is None else self.affine.tolist(),
            'rgb': self.rgb,
            'source': None if self.source is None else str(self.source),
            'meta': self.meta,
            'units': self.units,
        }

    @classmethod
    def from_metadata(cls, md: dict) -> ImageData:
        """Rebuild the geometry from :meth:`to_metadata` output.  The pixels
        are a zero-cost read-only placeholder with the original shape."""
        data = np.broadcast_to(np.zeros((), md.get('dtype', 'uint8')), md['shape'])
        return cls(
            data=data,
            axes=md['axes'],
            scale=tuple(md['scale']),
            translate=tuple(md['translate']),
            affine=None if md.get('affine') is None else np.asarray(md['affine']),
            rgb=bool(md.get('rgb', False)),
            source=md.get('source'),
            meta=dict(md.get('meta') or {}),
            units=md.get('units'),
        )
