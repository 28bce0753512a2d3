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
import functools
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
from .._threads import default_threads, torch_threads
from ..devices import resolve_device
from ..model.gc_pause import gc_paused_steps
from ..rules.intensity import PlaneInspector, inspect_intensities
from ..rules.layout import ImageLayout, image_layout, slice_position
from ..rules.normalization import map_channels, normalize, override_normalization
from ..rules.tiled_prediction import BlendedSlice, ConstantWindows, SliceWindows
from ..rules.tiling import (
    DEFAULT_OVERLAP,
    check_overlap,
    check_tile_size,
)
from ._run import Pace, RunOutputs, SliceInFlight
from .fit import judge_fit, sample_planes
from .results import Cancelled, PredictionResult, Progress

log = logging.getLogger(__name__)

DEFAULT_BATCH = {'cpu': 2, 'mps': 4, 'cuda': 8}


@dataclass
class _LazyChecks:
    """The checks of a lazy image (dask, zarr), made on the planes the run
    reads anyway: the intensities of every plane, and the model's fit on a
    sample of them."""

    inspector: PlaneInspector
    fit_planes: set[int]
    fit_inputs: list[np.ndarray] = field(default_factory=list)


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
        axes = dict(
            channel_axis=channel_axis,
            slice_axis=slice_axis,
            rgb=rgb,
            channel_map=channel_map,
        )
        steps = self._iter_predict(
            image, axes, return_probabilities, return_uncertainty
        )
        with torch_threads(threads):
            # the collector's full walks of napari's heap froze the viewer
            return (yield from gc_paused_steps(steps))

    def _iter_predict(
        self,
        image: Any,
        axes: dict[str, Any],
        return_probabilities: bool,
        return_uncertainty: bool,
    ) -> Generator[Progress, None, PredictionResult]:
        """The run: a slice is read with its first window, written with its last."""
        start = time.perf_counter()
        layout = image_layout(
            np.shape(image), axes['channel_axis'], axes['slice_axis'], axes['rgb']
        )
        notes, lazy = self._check_image(image, layout, axes)
        geometry = self._geometry(layout)
        windows = geometry.windows
        n_slices = layout.n_slices
        total = n_slices * len(windows)
        outputs = RunOutputs.allocate(
            layout,
            self.num_classes,
            self.threshold,
            self.probability_dtype,
            probabilities=return_probabilities,
            uncertainty=return_uncertainty,
        )
        read = functools.partial(
            self._read_slice,
            image,
            layout,
            geometry,
            axes['channel_map'],
            lazy,
            blank=return_uncertainty,
        )
        batch_size = self.batch_size
        weights = geometry.weights(self.device)
        model = ConstantWindows(self._forward, self.device)
        in_flight: dict[int, SliceInFlight] = {}
        queue = [(z, w) for z in range(n_slices) for w in range(len(windows))]
        done = slices_done = 0
        pace = Pace()
        yield Progress(0, total, 0, n_slices, 'starting', tuple(notes))
        while done < len(queue):
            batch = queue[done : done + batch_size]
            for z, _ in batch:
                if z not in in_flight:
                    in_flight[z] = read(z)
            inputs = [in_flight[z].blend.window_input(windows[w]) for z, w in batch]
            try:
                out = model(inputs)
            except Exception as err:
                if not _is_oom(err):
                    raise
                batch_size = self._retry_after_oom(batch_size, notes, model, in_flight)
                weights = geometry.weights(self.device)
                continue
            for (z, w), tile_out in zip(batch, out, strict=True):
                in_flight[z].blend.add(windows[w], tile_out, weights)
            done += len(batch)
            for z in [z for z, s in in_flight.items() if s.blend.remaining == 0]:
                state = in_flight.pop(z)
                p = state.blend.probabilities(geometry.height, geometry.width)
                outputs.write(z, p, state)
                slices_done += 1
            left = pace.seconds_left(done, total)
            yield Progress(done, total, slices_done, n_slices, seconds_left=left)
            pace.first_batch_done(done)
        if lazy is not None:
            notes += self._check_read_planes(lazy, n_slices)
        return PredictionResult(
            labels=outputs.labels,
            probabilities=outputs.probabilities,
            class_names=self.class_names,
            device=str(self.device),
            seconds=time.perf_counter() - start,
            warnings=notes,
            uncertainty=outputs.uncertainty,
            slice_uncertainty=outputs.slice_uncertainty,
            slice_axis=slice_position(layout),
        )

    # -- steps ------------------------------------------------------------
    def _geometry(self, layout: ImageLayout) -> SliceWindows:
        """The windows of each slice, for this image and device."""
        height, width = (
            s for i, s in enumerate(layout.spatial_shape) if i != slice_position(layout)
        )
        return SliceWindows.of(
            height, width, self.tile_size, self.device.type, self.overlap
        )

    def _check_image(
        self, image: Any, layout: ImageLayout, axes: dict[str, Any]
    ) -> tuple[list[str], _LazyChecks | None]:
        """The warnings known before the run, and, for a lazy image (dask,
        zarr), the checks to make on the planes as the run reads them, so
        that nothing is read twice.  Unusable intensities raise here."""
        if not isinstance(image, np.ndarray):
            inspector = PlaneInspector(
                self.normalization, nonfinite_background=self.nonfinite_background
            )
            return [], _LazyChecks(inspector, set(sample_planes(layout.n_slices)))
        report = inspect_intensities(
            image,
            normalization=self.normalization,
            nonfinite_background=self.nonfinite_background,
        )
        report.raise_errors()
        notes = list(report.warnings)
        for note in notes:
            warnings.warn(note, UserWarning, stacklevel=4)
        # does the model suit the image?  One that cannot take it fails
        # later, with the fix
        fit = self.assess_fit(image, **axes)
        notes += self._fit_notes(fit) if fit.usable else []
        return notes, None

    def _check_read_planes(self, lazy: _LazyChecks, n_slices: int) -> list[str]:
        """The warnings about a lazy image, from the planes the run read."""
        report = lazy.inspector.report()
        report.raise_errors()
        for note in report.warnings:
            warnings.warn(note, UserWarning, stacklevel=4)
        kind = 'volume' if n_slices > 1 else '2d'
        stats = getattr(self.checkpoint, 'training_stats', None)
        fit = judge_fit(stats, lazy.fit_inputs, kind)
        return list(report.warnings) + self._fit_notes(fit)

    def _read_slice(
        self,
        image: Any,
        layout: ImageLayout,
        geometry: SliceWindows,
        channel_map: Sequence[int] | None,
        lazy: _LazyChecks | None,
        z: int,
        *,
        blank: bool,
    ) -> SliceInFlight:
        """Read plane ``z`` once: checked (if lazy), normalised, padded;
        with ``blank``, whether it holds one value (for the uncertainty)."""
        plane = layout.plane(image, z)
        x = normalize(plane, self.normalization)
        x = map_channels(x, self.input_channels, channel_map, rgb=layout.rgb)
        if lazy is not None:
            lazy.inspector.add(z, plane)
            if z in lazy.fit_planes:
                lazy.fit_inputs.append(x)
        missing = None
        if self.nonfinite_background:
            bad = ~np.isfinite(plane).all(axis=0)
            missing = bad if bad.any() else None
        return SliceInFlight(
            blend=BlendedSlice.start(x, geometry, self.num_classes, self.device),
            missing=missing,
            blank=blank and _is_blank(plane),
        )

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

    def _retry_after_oom(
        self,
        batch_size: int,
        notes: list[str],
        model: ConstantWindows,
        in_flight: dict[int, SliceInFlight],
    ) -> int:
        """The batch size to retry with after running out of memory; notes
        and warns what changed, and moves the run to the new device."""
        batch_size, note = self._recover_from_oom(batch_size)
        notes.append(note)
        warnings.warn(note, RuntimeWarning, stacklevel=4)
        model.device = self.device
        model.clear()
        for state in in_flight.values():  # the device may have changed
            state.blend.to(self.device)
        return batch_size

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
