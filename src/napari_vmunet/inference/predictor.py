"""The Predictor: any image or volume in, labels (and probabilities) out.

One code path serves the CLI, notebooks and the napari dock.  The work is a
generator (:meth:`Predictor.iter_predict`) that yields a :class:`Progress`
after every batch of tiles and returns a :class:`PredictionResult`, so

* napari runs it in a generator thread worker (cancel at any yield, the
  viewer never blocks),
* :meth:`Predictor.predict` drives it with plain ``progress`` /
  ``should_cancel`` callbacks for scripts and the CLI.

A volume is predicted slice by slice along ``slice_axis`` and every slice
in one window when it fits, else by Gaussian-blended sliding-window tiles
sized for the device (``rules.tiling.auto_tile``).
Tiles of consecutive slices share batches, only a few slices are ever in
flight, and a dask or zarr input is read one slice at a time: memory stays
at input + output + a few slices.  On CUDA out-of-memory the tile batch is
halved and retried; at batch 1 the model moves to the CPU with a warning.
Nothing is written to the caller's arrays; a cancelled run returns nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._generators import drive
from .._text import format_duration
from .._threads import default_threads, torch_threads
from ..devices import resolve_device
from ..model.gc_pause import gc_paused_steps
from ..rules.intensity import PlaneInspector, inspect_intensities
from ..rules.layout import ImageLayout, image_layout, slice_position
from ..rules.normalization import map_channels, normalize, override_normalization
from ..rules.tiled_prediction import BlendedSlice, ConstantWindows, SliceWindows
from ..rules.tiling import (
    DEFAULT_OVERLAP,
    blend_weights,
    check_overlap,
    check_tile_size,
)
from .fit import judge_fit, sample_planes
from .uncertainty import SliceRanking, pixel_uncertainty

log = logging.getLogger(__name__)

DEFAULT_BATCH = {'cpu': 2, 'mps': 4, 'cuda': 8}


class Cancelled(Exception):
    """Raised by :meth:`Predictor.predict` when ``should_cancel`` said so."""


@dataclass
class Progress:
    """One step of a prediction, as yielded by :meth:`Predictor.iter_predict`."""

    done: int  # tiles processed so far
    total: int  # tiles in the whole job
    slices_done: int
    slices_total: int
    message: str = ''
    #: what the user should know before the result arrives (the first
    #: Progress of a run carries the warnings found up front)
    warnings: tuple[str, ...] = ()
    #: estimated time to the end, from the pace so far (None: no pace yet)
    seconds_left: float | None = None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def describe(self) -> str:
        """``'slice 3/48, tile 3/48, about 40 s left'`` for a status line."""
        parts = [self.message] if self.message else []
        if self.slices_total > 1:
            parts.append(f'slice {self.slices_done}/{self.slices_total}')
        parts.append(f'tile {self.done}/{self.total}')
        if self.seconds_left is not None and self.done < self.total:
            parts.append(f'about {format_duration(self.seconds_left)} left')
        return ', '.join(parts)


@dataclass
class PredictionResult:
    labels: np.ndarray  # spatial shape of the input (channels removed)
    probabilities: (
        np.ndarray | None
    )  # float16; (K, *spatial) or (*spatial) for one class
    class_names: list[str]
    device: str  # where it finally ran
    seconds: float
    warnings: list[str] = field(default_factory=list)
    #: with ``return_uncertainty``: the per-pixel uncertainty (normalised
    #: entropy, 0 certain .. 1 a coin toss; float16, spatial shape) and
    #: its mean per slice (``inference.uncertainty``)
    uncertainty: np.ndarray | None = None
    slice_uncertainty: np.ndarray | None = None
    #: the axis of ``labels`` the slices were predicted along (None: 2-D)
    slice_axis: int | None = None

    def ranking(self, annotated: Any = ()) -> SliceRanking:
        """The slices to annotate next, most uncertain first, without the
        ``annotated`` ones (slice indices, or a labels array whose slices
        with any label count as annotated).  Needs ``return_uncertainty``."""
        from .uncertainty import annotated_slices, rank_slices

        if self.slice_uncertainty is None:
            raise ValueError(
                'this prediction has no uncertainty: predict with '
                'return_uncertainty=True (CLI: --uncertainty)'
            )
        if np.ndim(annotated) > 1:  # a labels array
            if np.shape(annotated) != self.labels.shape:
                raise ValueError(
                    f'annotations of shape {np.shape(annotated)} do not match '
                    f'the prediction, {self.labels.shape}'
                )
            annotated = annotated_slices(annotated, self.slice_axis)
        return rank_slices(self.slice_uncertainty, annotated)


def _is_blank(plane: np.ndarray) -> bool:
    """Whether a plane holds one value (its non-finite pixels aside)."""
    values = np.asarray(plane)
    finite = values[np.isfinite(values)]
    return finite.size == 0 or bool(finite.min() == finite.max())


def check_batch_size(batch_size: Any) -> int:
    """A positive number of tiles per forward pass."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f'batch size must be a whole number, got {batch_size!r}')
    if batch_size < 1:
        raise ValueError(
            f'batch size must be at least 1 tile per forward pass, got {batch_size}'
        )
    return int(batch_size)


def check_threshold(threshold: Any) -> float:
    """A probability threshold strictly between 0 and 1: at 0 or 1 (or NaN)
    every pixel would be foreground, or none."""
    if not (_is_real(threshold) and 0.0 < threshold < 1.0):
        raise ValueError(
            'the threshold is the foreground probability above which a pixel '
            f'is labelled; it must lie strictly between 0 and 1, got {threshold!r}'
        )
    return float(threshold)


def _is_real(value: Any) -> bool:
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and bool(np.isfinite(value))
    )


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and 'out of memory' in str(err).lower()


class Predictor:
    """Run a VM-UNet checkpoint on images and volumes of any size.

    Parameters
    ----------
    checkpoint:
        A path, or a :class:`napari_vmunet.checkpoint.Checkpoint`.
    device:
        ``'auto'`` (cuda -> mps -> cpu), ``'cpu'``, ``'cuda[:N]'`` or ``'mps'``.
    tile_size:
        Sliding-window size (a multiple of 32).  0 predicts each image (or
        slice) in one window, padded to a multiple of 32.  Default: chosen
        per image and device, independent of the training tile
        (:func:`~napari_vmunet.rules.tiling.auto_tile`): the whole slice
        when it fits (up to 256² on a CPU, 2048² on CUDA), else 256² tiles
        on a CPU, 1024² on CUDA.
    overlap:
        Fraction of a tile shared with its neighbour (0 <= overlap < 1).
    batch_size:
        Tiles per forward pass; default depends on the device.
    threshold:
        Probability threshold for one-class models.
    normalization:
        Overrides the checkpoint's normalisation (see ``preprocess``).
    threads:
        CPU threads while predicting on the CPU; default: all CPUs but one,
        minus those a training of this session uses (see ``_threads``).
    nonfinite_background:
        Pixels that are NaN or infinite in any channel (missing data) get
        label 0 and probability 0.  Otherwise the network sees them as the
        darkest (NaN, -inf) or brightest (+inf) finite value, and the result
        warns about them.
    """

    #: dtype of returned probabilities: float16 halves the memory of big
    #: volumes; the bioimage.io export sets float32 for exact test tensors
    probability_dtype: type = np.float16

    def __init__(
        self,
        checkpoint: Any,
        device: str | torch.device = 'auto',
        *,
        tile_size: int | None = None,
        overlap: float = DEFAULT_OVERLAP,
        batch_size: int | None = None,
        threshold: float = 0.5,
        normalization: dict | None = None,
        scan_backend: str = 'auto',
        amp: bool = True,
        threads: int | None = None,
        nonfinite_background: bool = False,
    ):
        if isinstance(checkpoint, (str, Path)):
            from ..checkpoint import load_checkpoint

            checkpoint = load_checkpoint(checkpoint)
        self.checkpoint = checkpoint
        self.metadata: dict = dict(checkpoint.metadata)
        self.device = resolve_device(device)
        self.model = checkpoint.model.to(self.device).eval()
        self.model.set_scan_backend(scan_backend)
        inputs = self.metadata.get('input', {})
        #: None: chosen per image and device (``rules.tiling.auto_tile``)
        self.tile_size = None if tile_size is None else check_tile_size(tile_size)
        self.overlap = check_overlap(overlap)
        if batch_size is None:
            batch_size = DEFAULT_BATCH.get(self.device.type, 2)
        self.batch_size = check_batch_size(batch_size)
        self.threshold = check_threshold(threshold)
        self.normalization = override_normalization(
            inputs.get('normalization'), normalization
        )
        self.amp = amp
        self.threads = threads
        self.nonfinite_background = bool(nonfinite_background)

    # -- what the model is ------------------------------------------------
    @property
    def model_name(self) -> str:
        """The checkpoint's file name without suffix, for messages."""
        path = getattr(self.checkpoint, 'path', None)
        return Path(path).stem if path else 'the model'

    def _fit_notes(self, fit) -> list[str]:
        note = fit.warning(self.model_name)
        if note:
            warnings.warn(note, UserWarning, stacklevel=4)
        return [note] if note else []

    def assess_fit(self, image: Any, **axes: Any):
        """How well the model suits ``image`` (:func:`.fit.assess_fit`),
        normalised as this predictor normalises."""
        from .fit import assess_fit

        return assess_fit(
            self.checkpoint,
            image,
            normalization=self.normalization,
            channels=self.input_channels,
            **axes,
        )

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def input_channels(self) -> int:
        return int(self.model.input_channels)

    @property
    def class_names(self) -> list[str]:
        names = self.metadata.get('classes', {}).get('names')
        n = max(2, self.num_classes)
        if not names or len(names) != n:
            names = ['background'] + [f'class {i}' for i in range(1, n)]
        return list(names)

    # -- running ------------------------------------------------------------
    def predict(
        self,
        image: Any,
        *,
        channel_axis: int | None = None,
        slice_axis: int | None = None,
        rgb: bool | None = None,
        channel_map: Sequence[int] | None = None,
        return_probabilities: bool = False,
        return_uncertainty: bool = False,
        progress: Callable[[Progress], None] | None = None,
        should_cancel: Callable[[], bool] | threading.Event | None = None,
    ) -> PredictionResult:
        """Predict ``image`` (see :meth:`iter_predict`), reporting through
        callbacks.  Raises :class:`Cancelled` when ``should_cancel`` is set."""
        gen = self.iter_predict(
            image,
            channel_axis=channel_axis,
            slice_axis=slice_axis,
            rgb=rgb,
            channel_map=channel_map,
            return_probabilities=return_probabilities,
            return_uncertainty=return_uncertainty,
        )
        return drive(
            gen, progress, should_cancel, lambda: Cancelled('prediction cancelled')
        )

    def iter_predict(
        self,
        image: Any,
        *,
        channel_axis: int | None = None,
        slice_axis: int | None = None,
        rgb: bool | None = None,
        channel_map: Sequence[int] | None = None,
        return_probabilities: bool = False,
        return_uncertainty: bool = False,
    ) -> Generator[Progress, None, PredictionResult]:
        """Generator form: yields :class:`Progress` after every tile batch and
        returns the :class:`PredictionResult` (``StopIteration.value``).

        ``image``: (Y, X) grey, (Y, X, 3|4) RGB, multichannel with
        ``channel_axis``, a (Z, Y, X) volume (slices along ``slice_axis``,
        default the first spatial axis), or a volume with channels.  numpy,
        dask and zarr arrays are accepted.

        ``return_uncertainty``: also the per-pixel uncertainty map and its
        mean per slice, computed slice by slice as the run goes (no
        probabilities are kept for it); :meth:`PredictionResult.ranking`
        orders the slices for annotating next.
        """
        threads = None
        if self.device.type == 'cpu':
            threads = self.threads or default_threads()
        steps = self._iter_predict(
            image,
            channel_axis,
            slice_axis,
            rgb,
            channel_map,
            return_probabilities,
            return_uncertainty,
        )
        with torch_threads(threads):
            # the collector's full walks of napari's heap froze the viewer
            return (yield from gc_paused_steps(steps))

    def _iter_predict(
        self,
        image,
        channel_axis,
        slice_axis,
        rgb,
        channel_map,
        return_probabilities,
        return_uncertainty=False,
    ) -> Generator[Progress, None, PredictionResult]:
        start = time.perf_counter()
        layout = image_layout(np.shape(image), channel_axis, slice_axis, rgb)
        # in-memory images are checked before the run; lazy ones (dask, zarr)
        # as their planes are read, so nothing is read twice
        inspector = None
        notes: list[str] = []
        if isinstance(image, np.ndarray):
            report = inspect_intensities(
                image,
                normalization=self.normalization,
                nonfinite_background=self.nonfinite_background,
            )
            report.raise_errors()
            notes += report.warnings
            for note in notes:
                warnings.warn(note, UserWarning, stacklevel=3)
        else:
            inspector = PlaneInspector(
                self.normalization, nonfinite_background=self.nonfinite_background
            )
        # does the model suit the image?  Lazy images are judged on the
        # planes the run reads anyway, at the end
        fit_planes, fit_inputs = None, []
        if inspector is None:
            fit = self.assess_fit(
                image,
                channel_axis=channel_axis,
                slice_axis=slice_axis,
                rgb=rgb,
                channel_map=channel_map,
            )
            # a model that cannot take the image fails below, with the fix
            notes += self._fit_notes(fit) if fit.usable else []
        else:
            fit_planes = set(sample_planes(layout.n_slices))
        spatial = layout.spatial_shape
        height, width = (
            s for i, s in enumerate(spatial) if i != slice_position(layout)
        )
        geometry = SliceWindows.of(
            height, width, self.tile_size, self.device.type, self.overlap
        )
        windows = geometry.windows
        n_slices = layout.n_slices
        total = n_slices * len(windows)

        k = self.num_classes
        labels = np.zeros(spatial, dtype=np.uint8 if k < 255 else np.uint16)
        probs = None
        if return_probabilities:
            probs = np.zeros(
                ((k,) if k > 1 else ()) + spatial, dtype=self.probability_dtype
            )
        labels_view = _slice_first(labels, layout)
        probs_view = _slice_first(probs, layout, offset=1 if k > 1 else 0)
        unc = unc_view = slice_unc = None
        if return_uncertainty:
            unc = np.zeros(spatial, dtype=np.float16)
            unc_view = _slice_first(unc, layout)
            slice_unc = np.full(n_slices, np.nan)

        batch_size = self.batch_size
        weights = blend_weights(geometry.tile, self.device)
        model = ConstantWindows(self._forward, self.device)
        in_flight: dict[int, BlendedSlice] = {}
        missing: dict[int, np.ndarray] = {}  # slice -> its non-finite pixels
        blank: set[int] = set()  # slices of one value (uncertainty only)
        queue = [(z, w) for z in range(n_slices) for w in range(len(windows))]
        done = slices_done = 0
        pos = 0
        yield Progress(0, total, 0, n_slices, 'starting', tuple(notes))
        warm, first_batch = 0, time.perf_counter()
        while pos < len(queue):
            batch = queue[pos : pos + batch_size]
            for z, _ in batch:
                if z not in in_flight:
                    plane = layout.plane(image, z)
                    if inspector is not None:
                        inspector.add(z, plane)
                    if fit_planes is not None and z in fit_planes:
                        x = normalize(plane, self.normalization)
                        fit_inputs.append(
                            map_channels(
                                x, self.input_channels, channel_map, rgb=layout.rgb
                            )
                        )
                    in_flight[z] = self._prepare(
                        plane, layout.rgb, channel_map, geometry
                    )
                    if slice_unc is not None and _is_blank(plane):
                        blank.add(z)
                    if self.nonfinite_background:
                        bad = ~np.isfinite(plane).all(axis=0)
                        if bad.any():
                            missing[z] = bad
            try:
                out = model([in_flight[z].window_input(windows[w]) for z, w in batch])
            except Exception as err:
                if not _is_oom(err):
                    raise
                batch_size, note = self._recover_from_oom(batch_size)
                notes.append(note)
                weights = blend_weights(geometry.tile, self.device)
                model.device = self.device
                model.clear()
                for state in in_flight.values():  # the device may have changed
                    state.to(self.device)
                warnings.warn(note, RuntimeWarning, stacklevel=2)
                continue
            for (z, w), tile_out in zip(batch, out, strict=True):
                in_flight[z].add(windows[w], tile_out, weights)
            pos += len(batch)
            done += len(batch)
            for z in [z for z, s in in_flight.items() if s.remaining == 0]:
                state = in_flight.pop(z)
                p = state.probabilities(height, width)
                p = self._write(p, labels_view, probs_view, z, missing.pop(z, None))
                if unc_view is not None:
                    u = pixel_uncertainty(p, one_class=k == 1)
                    # a blank slice (air around a head) has nothing to
                    # annotate: it gets no score and is never suggested
                    slice_unc[z] = np.nan if z in blank else float(u.mean())
                    unc_view[z] = u.cpu().numpy()
                slices_done += 1
            left = None
            if warm:  # the pace since the first batch, which had one-off costs
                pace = (time.perf_counter() - first_batch) / max(done - warm, 1)
                left = pace * (total - done)
            yield Progress(done, total, slices_done, n_slices, seconds_left=left)
            if warm == 0:
                warm, first_batch = done, time.perf_counter()
        if inspector is not None:
            report = inspector.report()
            report.raise_errors()
            notes += report.warnings
            for note in report.warnings:
                warnings.warn(note, UserWarning, stacklevel=3)
            kind = 'volume' if n_slices > 1 else '2d'
            stats = getattr(self.checkpoint, 'training_stats', None)
            notes += self._fit_notes(judge_fit(stats, fit_inputs, kind))
        return PredictionResult(
            labels=labels,
            probabilities=probs,
            class_names=self.class_names,
            device=str(self.device),
            seconds=time.perf_counter() - start,
            warnings=notes,
            uncertainty=unc,
            slice_uncertainty=slice_unc,
            slice_axis=slice_position(layout),
        )

    # -- steps ------------------------------------------------------------
    def _prepare(self, plane, rgb, channel_map, geometry) -> BlendedSlice:
        x = normalize(plane, self.normalization)
        x = map_channels(x, self.input_channels, channel_map, rgb=rgb)
        return BlendedSlice.start(x, geometry, self.num_classes, self.device)

    @torch.inference_mode()
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(B, K, h, w)`` of a batch of windows."""
        autocast = contextlib.nullcontext()
        if self.amp and self.device.type == 'cuda':
            autocast = torch.autocast('cuda', dtype=torch.bfloat16)
        with autocast:
            y = self.model(x)
        y = y.float()
        return y if self.num_classes == 1 else torch.softmax(y, dim=1)

    def _write(
        self, p: torch.Tensor, labels, probs, z: int, missing=None
    ) -> torch.Tensor:
        """Write slice ``z``; returns its probabilities as written (missing
        data set to background), which the uncertainty is computed from."""
        if missing is not None:  # missing data is background, for certain
            bad = torch.from_numpy(missing).to(p.device)
            p = p.clone()
            p[:, bad] = 0.0
            if self.num_classes > 1:
                p[0, bad] = 1.0
        if self.num_classes == 1:
            labels[z] = (p[0] >= self.threshold).cpu().numpy()
        else:
            labels[z] = p.argmax(0).cpu().numpy()
        if probs is not None:
            probs[z] = (p[0] if self.num_classes == 1 else p).cpu().numpy()
        return p

    def _recover_from_oom(self, batch_size: int) -> tuple[int, str]:
        if self.device.type == 'cuda':
            torch.cuda.empty_cache()
        if batch_size > 1:
            note = (
                f'out of memory on {self.device}: tile batch '
                f'{batch_size} -> {batch_size // 2}'
            )
            log.warning(note)
            return batch_size // 2, note
        if self.device.type != 'cpu':
            old = self.device
            self.device = torch.device('cpu')
            self.model.to(self.device)
            note = (
                f'out of memory on {old} even with one tile at a time: '
                'continuing on the CPU (slower); a smaller tile size keeps it '
                'on the GPU'
            )
            log.warning(note)
            return 1, note
        raise MemoryError(
            'out of memory on the CPU with one tile at a time: use a smaller '
            'tile size or close other programs'
        )


def _slice_first(array: np.ndarray | None, layout: ImageLayout, offset: int = 0):
    """A view of an output array with the slice axis first (a leading axis
    of length 1 for a 2-D image), so slice ``z`` is ``view[z]``."""
    if array is None:
        return None
    pos = slice_position(layout)
    if pos is None:
        return array[None]
    return np.moveaxis(array, pos + offset, 0)
