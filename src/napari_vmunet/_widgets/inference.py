"""The inference dock: a checkpoint + an image layer -> an editable Labels layer.

All computation is :class:`napari_vmunet.inference.Predictor.iter_predict`,
run in a napari generator worker: it yields after every batch of tiles, so
the viewer keeps painting and Cancel takes effect within one batch.  The
result only touches the viewer when the job finished, so a cancelled or
failed run leaves every layer as it was.

The dock is its sections (``_inference_model``: the checkpoint;
``_inference_image``: the layer and its axes; ``_inference_options``: the
run settings; ``_inference_layers``: the result into layers; the objects
and the next-slice panels) and the run: the widgets become a
:class:`~napari_vmunet.inference.request.PredictionRequest`, which
:func:`~napari_vmunet.inference.request.iter_request` runs.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QWidget

from ._bus import listen
from ._controls import RunControls, button, status_label
from ._docking import scrolling_layout
from ._inference_image import ImageSection
from ._inference_layers import DockRun, geometry, probability_writers, write_labels
from ._inference_model import ModelSection, _warm_prediction_imports, gone
from ._inference_options import OptionsSection

if TYPE_CHECKING:
    import napari

#: Seconds between updates of napari's progress bar (each one repaints).
PBAR_INTERVAL_S = 0.25


class InferenceWidget(QWidget):
    """Run a VM-UNet checkpoint on an image layer (2D, RGB, multichannel, 3D)."""

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        from .. import _scan_warmup

        _scan_warmup.start()  # the CPU scan's kernels, before the first run
        # and a first prediction's imports, in a worker, as the dock opens: an
        # import of MONAI triggered a 200-250 ms full collection in napari's
        # heap, which stalled the viewer when it fell inside the first Run
        _warm_prediction_imports()
        from ._nextslice import NextSlicePanel
        from ._results_table import ObjectsPanel

        self.viewer = napari_viewer
        self._worker = None
        self._pbar = None
        self._pbar_shown = 0.0  # when napari's progress bar was last updated
        # GUI work after a run (adding layers), one piece per event-loop turn
        self._ui_steps: deque = deque()
        self._predictor = None
        self._predictor_key = None
        self._job_over = False
        self._run_warnings = ''
        self._model_channels: int | None = None  # of the described checkpoint
        self.last_result = None  # (DockRun, RequestResult) of the last run
        self._export_dialog = None

        layout = scrolling_layout(self)  # fits a laptop screen, tabs with ours
        self.image = ImageSection(self.viewer)
        self.model = ModelSection(self.image.layer)
        self.options = OptionsSection()
        self.controls = RunControls(
            button('Run', self.run), [button('Cancel', self.cancel)]
        )
        self.status = status_label()
        self.diagnostics = QLabel('')
        self.diagnostics.setWordWrap(True)
        self.diagnostics.setStyleSheet('color: gray; font-size: 10px')
        self.next_slices = NextSlicePanel(self.viewer)
        self.objects = ObjectsPanel(self.viewer, self.image.layer)
        for part in (self.model, self.image, self.options):
            layout.addWidget(part)
        layout.addLayout(self.controls.row)
        for part in (self.controls.progress, self.status, self.diagnostics):
            layout.addWidget(part)
        layout.addWidget(self.next_slices)
        layout.addWidget(self.objects)
        layout.addStretch(1)

        self._diagnostics_again = QTimer(self)
        self._diagnostics_again.setSingleShot(True)
        self._diagnostics_again.timeout.connect(self._update_diagnostics)
        self._update_diagnostics()
        self.model.usability_changed.connect(self._update_run_enabled)
        self.model.described.connect(self._follow_model)
        self.model.preselected.connect(self.status.setText)
        self.model.export_button.clicked.connect(self.export_for_bioimageio)
        self.image.image_layer.currentIndexChanged.connect(self._image_changed)
        self.device.currentIndexChanged.connect(self._update_diagnostics)
        listen(self, self._on_model_published)
        self._image_changed()
        self.model.selection_changed()

    # the sections' controls, under the names tests and scripts use
    checkpoint = property(lambda self: self.model.checkpoint)
    browse = property(lambda self: self.model.browse)
    model_info = property(lambda self: self.model.model_info)
    export_button = property(lambda self: self.model.export_button)
    image_layer = property(lambda self: self.image.image_layer)
    channel_axis = property(lambda self: self.image.channel_axis)
    slice_axis = property(lambda self: self.image.slice_axis)
    scope_all = property(lambda self: self.image.scope_all)
    scope_slice = property(lambda self: self.image.scope_slice)
    time_points = property(lambda self: self.image.time_points)
    device = property(lambda self: self.options.device)
    threshold = property(lambda self: self.options.threshold)
    overlap = property(lambda self: self.options.overlap)
    tile_size = property(lambda self: self.options.tile_size)
    whole_image = property(lambda self: self.options.whole_image)
    batch_size = property(lambda self: self.options.batch_size)
    channel_map = property(lambda self: self.options.channel_map)
    normalization = property(lambda self: self.options.normalization)
    nonfinite_background = property(lambda self: self.options.nonfinite_background)
    probabilities = property(lambda self: self.options.probabilities)
    run_button = property(lambda self: self.controls.start)
    cancel_button = property(lambda self: self.controls.stops[0])
    progress = property(lambda self: self.controls.progress)

    # ------------------------------------------------------------ public API
    def set_checkpoint(self, path: str | os.PathLike) -> None:
        """Select ``path`` (adding it to the list).

        It is remembered for later sessions only if it can be a checkpoint:
        a text or empty file is refused at once (Run disabled, the reason in
        the model line), and a file that fails to load is forgotten again.
        """
        self.model.set_checkpoint(path)

    def set_image_layer(self, layer) -> None:
        self.image.image_layer.set_value(layer)

    def checkpoint_path(self) -> str | None:
        return self.model.path()

    def export_for_bioimageio(self) -> None:
        """Open the bioimage.io export form for the chosen checkpoint."""
        from .bioimageio_export import open_export_dialog

        self._export_dialog = open_export_dialog(self, self.checkpoint_path())

    # ------------------------------------------------------------- handlers
    def _update_diagnostics(self, *_args) -> None:
        """The diagnostics line, worked out in a worker: on a CPU it may load
        the numba scan (under a second from its disk cache), on CUDA it runs
        the Triton self-check.  While the numba scan is being compiled in
        the background the line says so, and it is worked out again after."""
        from napari.qt.threading import create_worker

        from .. import _scan_warmup

        if _scan_warmup.running():
            self._diagnostics_again.start(2000)
        worker = create_worker(
            _diagnostics_line, self.device.currentData(), _ignore_errors=True
        )
        worker.returned.connect(self._show_diagnostics)
        self._diagnostics_worker = worker  # keep a reference while it runs
        worker.start()

    def _show_diagnostics(self, line: str) -> None:
        with contextlib.suppress(RuntimeError):  # the dock closed meanwhile
            self.diagnostics.setText(line)

    def _on_model_published(self, path: str, reason: str) -> None:
        self.set_checkpoint(path)
        self.status.setText(
            f'New model ready: {Path(path).name} ({reason}). Press Run to use it.'
        )

    def _follow_model(self, ckpt) -> None:
        """A checkpoint was described: the options and axes it needs."""
        arch = ckpt.meta.architecture
        self.threshold.setEnabled(arch.num_classes == 1)
        self._model_channels = int(arch.input_channels)
        self._guess_channels()

    def _guess_channels(self) -> None:
        """Preselect a channel axis for the model, unless the user chose one,
        and say so (keeping the line that says which model was preselected)."""
        self._say_channel_guess(self.image.guess_channels(self._model_channels))

    def _say_channel_guess(self, reason: str | None) -> None:
        if reason is None:
            return
        text = self.status.text()
        if reason in text:
            return
        keep = text.startswith('Chose ')
        self.status.setText(f'{text} {reason}' if keep else reason)

    def _image_changed(self, *_args) -> None:
        reason = self.image.layer_changed(self._model_channels)
        self._update_run_enabled()
        self._say_channel_guess(reason)
        self.model.preselect(self.image.layer())

    def _update_run_enabled(self) -> None:
        """Run is offered when an image, a usable checkpoint and no job are there."""
        usable = self.model.usable()
        self.run_button.setEnabled(
            self._worker is None and usable and self.image.layer() is not None
        )
        self.run_button.setToolTip(
            ''
            if usable or not self.model.path()
            else 'This checkpoint cannot be used: see above'
        )

    # ------------------------------------------------------------------ run
    def _run_from_widgets(self) -> DockRun:
        """The run the widgets ask for: a core request, plus the layer it
        reads and the object options."""
        from ..inference.request import PredictionRequest

        layer = self.image.layer()
        if layer is None:
            raise ValueError('choose an image layer first')
        path = self.checkpoint_path()
        if not path:
            raise ValueError('choose a checkpoint first (Browse…)')
        if not Path(path).exists():
            self.model.mark_unusable(path, f'{path}: {gone()}')
            raise ValueError(f'{Path(path).name} {gone()}')
        data, axes = self.image.request_axes()
        request = PredictionRequest(
            checkpoint=path,
            **self.options.settings(),
            **axes,
            # a whole volume or stack: rank its slices for annotating next
            uncertainty=axes['slice_axis'] is not None
            and axes['slice_index'] is None
            and axes['time_axis'] is None,
        )
        run = DockRun(layer=layer, data=data, request=request)
        # objects and measurements after the prediction (whole runs only)
        run.objects = self.objects.settings_for_run(run, geometry(run))
        return run

    def run(self) -> None:
        """Start a prediction with the current settings (non-blocking)."""
        if self._worker is not None:
            return
        try:
            run = self._run_from_widgets()
        except ValueError as err:
            self._error(err)
            return
        from napari.qt.threading import create_worker

        self._worker = create_worker(
            self._job, run, _start_thread=False, _ignore_errors=True
        )
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._on_result)
        self._worker.errored.connect(self._error)
        self._worker.aborted.connect(self._on_aborted)
        self._worker.finished.connect(self._on_finished)
        self._job_over = False
        self._run_warnings = ''
        self.controls.set_running(True)
        self.controls.show_busy()
        self.status.setText('Loading the model…')
        self._worker.start()

    def cancel(self) -> None:
        """Stop the running prediction at its next tile batch."""
        if self._worker is not None:
            self.status.setText('Cancelling…')
            self._worker.quit()

    def _predictor_for(self, request):
        checkpoint = self.model.load(request.checkpoint)
        key = (id(checkpoint), request.predictor_settings())
        if key != self._predictor_key:
            self._predictor = None  # free the old model first
            self._predictor = request.make_predictor(checkpoint)
            self._predictor_key = key
        return self._predictor

    def _job(self, run: DockRun):
        """Runs in the worker thread: a generator yielding Progress."""
        from ..inference.request import iter_request

        predictor = self._predictor_for(run.request)
        result = yield from iter_request(run.request, run.data, predictor)
        if run.objects is not None:
            run.measured = yield from self.objects.iter_for_result(
                run, result.prediction
            )
        return run, result

    def _on_progress(self, step) -> None:
        if self._worker is None or self._job_over:
            return  # progress signals can arrive after the end of the job
        if hasattr(step, 'stage'):  # objects and measurements
            self.controls.show_progress(step.done, max(step.total, 1))
            self.status.setText(f'Objects: {step.message} {step.done}/{step.total}')
            return
        if step.total:
            self.controls.show_progress(step.done, step.total)
        if step.warnings:
            self._run_warnings = ' '.join(step.warnings)
        text = f'Predicting: {step.describe()}'
        if self._run_warnings:
            text += f' — {self._run_warnings}'
        self.status.setText(text)
        # napari's progress bar processes pending events on every update
        # (a repaint, and re-entrancy): a few updates a second are plenty
        now = time.monotonic()
        if now - self._pbar_shown < PBAR_INTERVAL_S and step.done < step.total:
            return
        self._pbar_shown = now
        pbar = self._pbar
        if pbar is None:
            from napari.utils import progress

            pbar = self._pbar = progress(total=step.total, desc='VM-UNet inference')
        pbar.update(step.done - pbar.n)

    def _later(self, step) -> None:
        """Queue GUI work; the queue runs one step per event-loop turn.

        Adding a layer costs napari 0.1-0.4 s here (benchmarks/responsiveness.py);
        adding the labels and each probability layer in one slot would
        freeze the viewer for their sum.
        """
        self._ui_steps.append(step)
        if len(self._ui_steps) == 1:
            QTimer.singleShot(0, self._next_ui_step)

    def _next_ui_step(self) -> None:
        step = self._ui_steps[0]
        try:
            step()
        except Exception as err:  # noqa: BLE001 - reported, the queue goes on
            self._error(err)
        finally:
            self._ui_steps.popleft()
            if self._ui_steps:
                QTimer.singleShot(0, self._next_ui_step)

    def _on_result(self, value) -> None:
        self._job_over = True
        run, answer = value
        result = answer.prediction
        self.last_result = value
        written = {}

        def labels() -> None:
            written['layer'] = write_labels(
                self.viewer, run, answer, colors=self._colors(), objects=self.objects
            )

        def done() -> None:
            if 'layer' not in written:
                return  # writing it failed, and the error is on screen
            text = (
                f'Done in {result.seconds:.1f} s on {result.device}: '
                f'“{written["layer"].name}” is ready to edit.'
            )
            if result.warnings:
                text += ' ' + ' '.join(result.warnings)
            self.status.setText(text)
            self.controls.show_progress(1, 1)
            self._show_next_slices(run, result)

        self._later(labels)
        if result.probabilities is not None:
            for write in probability_writers(self.viewer, run, answer):
                self._later(write)
        self._later(done)

    def _colors(self) -> list | None:
        try:
            return self._predictor.metadata.get('classes', {}).get('colors')
        except AttributeError:
            return None

    def _show_next_slices(self, run: DockRun, result) -> None:
        """The most uncertain slices of a volume or stack, annotated ones
        left out (``inference.uncertainty``); nothing for a 2-D image or a
        4-D stack; a single plane keeps the list of the last whole run."""
        panel = self.next_slices
        if result.slice_uncertainty is None or result.slice_axis is None:
            if run.request.slice_index is None:
                panel.clear()
            return
        shape = result.labels.shape
        panel.show_scores(
            result.slice_uncertainty,
            run.layer,
            run.request.slice_axis,
            shape,
            result.slice_axis,
            annotations=panel.default_annotations(shape),
        )

    def _on_aborted(self) -> None:
        self._job_over = True
        self.status.setText('Cancelled: no layer was changed.')
        self.controls.show_progress(0, 1)

    def _error(self, err: BaseException) -> None:
        from napari.utils.notifications import show_error

        from ..checkpoint import CheckpointError

        self._job_over = True
        path = self.checkpoint_path()
        if isinstance(err, CheckpointError) and str(err.path) == path:
            self.model.mark_unusable(path, str(err))
        message = f'VM-UNet inference failed: {err}'
        self.status.setText(message)
        show_error(message)

    def _on_finished(self) -> None:
        self._later(self._finish)  # after the result's layers are written

    def _finish(self) -> None:
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.controls.set_running(False)
        self._update_run_enabled()
        if self.progress.maximum() == 0:
            self.controls.show_progress(0, 1)


def _diagnostics_line(device) -> str:
    """The dock's diagnostics line for ``device`` (worker thread)."""
    from ..inference import diagnostics, format_diagnostics

    return format_diagnostics(diagnostics(device))
