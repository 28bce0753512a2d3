"""Physical units: pixel sizes, the unit names in column headers, and sizes
given by the user in pixels or in µm², mm³, mL.

A size is only meaningful with its unit, so every column that holds one
names it (``area_um2``, ``volume_mm3``, ``volume_mL``) and every size the
user types may carry one (``30um2``, ``0.5mL``).  The pixel size comes from
the image's geometry (NIfTI affine, OME/ImageJ calibration, a napari
layer's scale), never from a guess: an image without a unit is measured in
pixels, or in its bare scale units when it has a scale but no unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: metres per unit, for the length units images come with
_METRES = {'nm': 1e-9, 'um': 1e-6, 'mm': 1e-3, 'cm': 1e-2, 'm': 1.0}
_ALIASES = {
    'nanometer': 'nm',
    'nanometre': 'nm',
    'µm': 'um',
    'μm': 'um',  # Greek mu, not the micro sign
    'micron': 'um',
    'micrometer': 'um',
    'micrometre': 'um',
    'millimeter': 'mm',
    'millimetre': 'mm',
    'centimeter': 'cm',
    'centimetre': 'cm',
    'meter': 'm',
    'metre': 'm',
}
#: names meaning "no physical unit"
_NO_UNIT = {'', 'pixel', 'pixels', 'px', 'voxel', 'voxels', 'none'}
#: the axis letters of 2D and 3D images, for column names
AXES = {2: 'yx', 3: 'zyx'}
#: 'u' stands for an image's scale units when it has a scale but no unit
SCALE_UNIT = 'u'


def normalize_unit(unit: Any) -> str | None:
    """``'mm'``, ``'um'``, ... for a unit name or pint unit (napari's layer
    units), None for pixels.  Raises ``ValueError`` for non-length units."""
    if unit is None:
        return None
    text = str(unit).strip()
    key = text.lower()
    if key in _NO_UNIT:
        return None
    if text in _ALIASES or key in _ALIASES:
        return _ALIASES.get(text, _ALIASES.get(key))
    if key in _METRES:
        return key
    raise ValueError(
        f'unknown length unit {text!r}: use one of nm, um (µm), mm, cm, m or pixel'
    )


@dataclass(frozen=True)
class Geometry:
    """Where a label map's pixels lie in the world and how big they are.

    ``world`` maps data indices ``(z, y, x, 1)`` (or ``(y, x, 1)``) to world
    coordinates as napari shows them (for NIfTI: S, A, R millimetres);
    ``spacing`` is the physical size of one pixel along each data axis
    (the column norms of ``world``); ``unit`` the length unit of both
    (``'mm'``, ``'um'``, ...), ``SCALE_UNIT`` when the image has a scale but
    no unit, None for plain pixels.
    """

    world: np.ndarray
    unit: str | None = None

    def __post_init__(self) -> None:
        world = np.asarray(self.world, dtype=float)
        n = world.shape[0] - 1
        if world.shape != (n + 1, n + 1) or n not in AXES:
            raise ValueError(
                f'the world matrix must be 3x3 (2D) or 4x4 (3D), got {world.shape}'
            )
        if not np.all(np.isfinite(world)) or np.any(self._norms(world) == 0):
            raise ValueError('the image geometry is degenerate (zero or NaN scale)')
        object.__setattr__(self, 'world', world)
        unit = self.unit
        if unit != SCALE_UNIT:
            unit = normalize_unit(unit)
        if unit is None and not np.allclose(self._norms(world), 1.0):
            unit = SCALE_UNIT
        object.__setattr__(self, 'unit', unit)

    @staticmethod
    def _norms(world: np.ndarray) -> np.ndarray:
        n = world.shape[0] - 1
        return np.linalg.norm(world[:n, :n], axis=0)

    @classmethod
    def pixels(cls, ndim: int) -> Geometry:
        """Unit pixels at the origin: sizes are pixel counts."""
        return cls(np.eye(ndim + 1), None)

    @classmethod
    def from_scale(
        cls,
        scale: Sequence[float],
        translate: Sequence[float] | None = None,
        unit: Any = None,
        affine: np.ndarray | None = None,
    ) -> Geometry:
        """napari's composition: ``affine @ (translate + scale * index)``."""
        n = len(scale)
        inner = np.eye(n + 1)
        inner[:n, :n] = np.diag([float(s) for s in scale])
        if translate is not None:
            inner[:n, n] = [float(t) for t in translate]
        outer = np.eye(n + 1) if affine is None else np.asarray(affine, dtype=float)
        return cls(outer @ inner, unit)

    @classmethod
    def from_image(cls, image: Any) -> Geometry:
        """The geometry of a :class:`napari_vmunet.io.ImageData`."""
        return cls(image.world_affine(), image.units)

    @property
    def ndim(self) -> int:
        return self.world.shape[0] - 1

    @property
    def spacing(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self._norms(self.world))

    @property
    def pixel_size(self) -> float:
        """Area (2D) or volume (3D) of one pixel, in ``unit`` squared/cubed."""
        return float(np.prod(self.spacing))

    @property
    def suffix(self) -> str:
        """The unit as it appears in column names: ``um``, ``mm``, ``px``."""
        return self.unit or 'px'

    def size_columns(self) -> dict[str, float]:
        """Size column name -> factor from this unit's area/volume: the
        physical size column (``area_um2``, ``volume_mm3``) and, for volumes
        in a metric unit, ``volume_mL`` as radiology reports it."""
        if self.unit is None:
            return {('area_px' if self.ndim == 2 else 'volume_voxels'): 1.0}
        kind = 'area' if self.ndim == 2 else 'volume'
        columns = {f'{kind}_{self.unit}{self.ndim}': 1.0}
        if self.ndim == 3 and self.unit in ('mm', 'cm', 'm'):
            # 1 mL = 1 cm³ = 1000 mm³
            columns['volume_mL'] = (_METRES[self.unit] / 1e-2) ** 3
        return columns

    def to_world(self, index: np.ndarray) -> np.ndarray:
        """World coordinates of data indices (rows of ``index``)."""
        index = np.asarray(index, dtype=float).reshape(-1, self.ndim)
        return (
            index @ self.world[: self.ndim, : self.ndim].T
            + self.world[: self.ndim, self.ndim]
        )


_SIZE = re.compile(
    r'^\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*'
    r'(?P<unit>[a-zA-Zµμ]*)(?P<power>[23²³]?)\s*$'
)


def parse_size(text: str | float | int) -> tuple[float, str]:
    """``'30'`` -> ``(30, 'px')``; ``'12.5um2'``/``'12.5 µm²'`` ->
    ``(12.5, 'um2')``; ``'0.5mL'`` -> ``(0.5, 'mL')``; ``'5mm3'``."""
    if isinstance(text, (int, float, np.integer, np.floating)):
        value, unit = float(text), 'px'
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ValueError(
                f'cannot read the size {text!r}: give a number of pixels (30) or '
                'a number with an area or volume unit (30um2, 5mm3, 0.5mL)'
            )
        value = float(match['value'])
        unit = match['unit'] + {'²': '2', '³': '3'}.get(match['power'], match['power'])
        unit = (unit or 'px').replace('µ', 'u').replace('μ', 'u')
    if not np.isfinite(value) or value < 0:
        raise ValueError(f'a size must be a number >= 0, got {text!r}')
    return value, unit


def size_in_pixels(value: float, unit: str, geometry: Geometry) -> float:
    """A minimum object size given in ``unit`` (``'px'``, ``'um2'``,
    ``'mm3'``, ``'mL'``, ...) as a number of pixels of ``geometry``."""
    unit = unit.strip()
    if unit.lower() in ('px', 'pixel', 'pixels', 'voxel', 'voxels', ''):
        return float(value)
    n = geometry.ndim
    what = 'an area (e.g. um2)' if n == 2 else 'a volume (e.g. mm3 or mL)'
    if unit.lower() == 'ml':
        length, power = 'cm', 3
    else:
        length, power = unit[:-1], unit[-1:]
        if power not in ('2', '3'):
            raise ValueError(
                f'cannot read the unit {unit!r} of a size: use px, or {what}'
            )
        length, power = normalize_unit(length), int(power)
    if power != n:
        raise ValueError(
            f'a minimum size in {unit} does not fit a {n}D image: use px, or {what}'
        )
    if geometry.unit is None or geometry.unit == SCALE_UNIT:
        raise ValueError(
            f'the image has no physical unit, so a size in {unit} cannot be '
            'converted to pixels: give the size in pixels (px)'
        )
    factor = (_METRES[length] / _METRES[geometry.unit]) ** n
    return float(value) * factor / geometry.pixel_size
