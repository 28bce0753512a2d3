"""The checkpoint metadata document as dataclasses, for reading it by name.

The document on disk stays the JSON of :mod:`._metadata` (its schema, its
defaults and its checks live there).  :meth:`Metadata.from_dict` reads a
document -- it is validated first, so every field below is present and of
its type, and older files read exactly as :func:`~._metadata.validate_metadata`
reads them -- and :meth:`Metadata.to_dict` gives back the same keys and
values, so ``Metadata.from_dict(d).to_dict() == validate_metadata(d)``.
Code that *reads* metadata uses the attributes (``meta.input.tile``,
``meta.provenance.notes``) instead of nested ``dict`` look-ups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._metadata import ARCH_KEYS, PROVENANCE_KEYS, validate_metadata


@dataclass(frozen=True)
class Architecture:
    """The model configuration: ``VMUNet``'s keyword arguments."""

    num_classes: int
    input_channels: int
    depths: list[int]
    depths_decoder: list[int]
    dims: list[int]
    dims_decoder: list[int]
    d_state: int

    def to_dict(self) -> dict[str, Any]:
        return {key: _copy(getattr(self, key)) for key in ARCH_KEYS}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Architecture:
        return cls(**{key: _copy(raw[key]) for key in ARCH_KEYS})


@dataclass(frozen=True)
class Classes:
    """The output classes, background first, and their colours."""

    names: list[str]
    colors: list[str | None]

    def to_dict(self) -> dict[str, Any]:
        return {'names': list(self.names), 'colors': list(self.colors)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Classes:
        return cls(names=list(raw['names']), colors=list(raw['colors']))


@dataclass(frozen=True)
class Normalization:
    """How images are scaled for the model (``rules.normalization``).

    ``low``/``high``: the window or percentiles (``window``, ``percentile``
    only); ``range``: the output range when it is not the default [0, 255].
    """

    mode: str
    low: float | None = None
    high: float | None = None
    range: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stored (minimal) form, as the rules' functions take it."""
        out: dict[str, Any] = {'mode': self.mode}
        if self.low is not None:
            out['low'], out['high'] = self.low, self.high
        if self.range is not None:
            out['range'] = list(self.range)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Normalization:
        rng = raw.get('range')
        return cls(
            mode=raw['mode'],
            low=raw.get('low'),
            high=raw.get('high'),
            range=None if rng is None else list(rng),
        )


@dataclass(frozen=True)
class InputSpec:
    """What the model takes: channels, normalisation, the training tile."""

    channels: int
    normalization: Normalization
    tile_size: list[int]  # [height, width]

    @property
    def tile(self) -> int:
        """The (square) tile's side."""
        return int(self.tile_size[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            'channels': self.channels,
            'normalization': self.normalization.to_dict(),
            'tile_size': list(self.tile_size),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> InputSpec:
        return cls(
            channels=raw['channels'],
            normalization=Normalization.from_dict(raw['normalization']),
            tile_size=list(raw['tile_size']),
        )


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from and how they were trained."""

    initialized_from: str | None
    training_data: str | None
    epochs: int
    best_val_dice: float | None
    created: str
    package_version: str
    command: str | None
    notes: str | None

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PROVENANCE_KEYS}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Provenance:
        return cls(**{key: raw[key] for key in PROVENANCE_KEYS})


@dataclass(frozen=True)
class Metadata:
    """A checkpoint's whole metadata document."""

    format_version: int
    architecture: Architecture
    classes: Classes
    input: InputSpec
    provenance: Provenance

    def to_dict(self) -> dict[str, Any]:
        return {
            'format_version': self.format_version,
            'architecture': self.architecture.to_dict(),
            'classes': self.classes.to_dict(),
            'input': self.input.to_dict(),
            'provenance': self.provenance.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Metadata:
        """Validate ``raw`` (``ValueError`` names a bad field) and read it."""
        meta = validate_metadata(raw)
        return cls(
            format_version=meta['format_version'],
            architecture=Architecture.from_dict(meta['architecture']),
            classes=Classes.from_dict(meta['classes']),
            input=InputSpec.from_dict(meta['input']),
            provenance=Provenance.from_dict(meta['provenance']),
        )


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
