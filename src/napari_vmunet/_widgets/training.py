"""The fine-tune dock: train on the labels you just corrected, in the background.

The work is :class:`napari_vmunet.training.TrainingProcess`: a separate
process (a crash or an out-of-memory kill there cannot take napari down)
fed with *copies* of the annotated slices, so you can keep painting while it
learns.  A ``QTimer`` drains its events into a live loss/Dice plot and a
status line; *Stop* ends it after the current step with a resumable
checkpoint, *Resume* continues (with your newest corrections), and every
improved model is offered to the inference dock at once.

The dock is its sections (``_training_data``: the layer pairs and the
annotation mode; ``_training_model``: the starting model and the classes;
``_training_recipe``: the recipe) and the run: the widgets become
:class:`~._training_request.FineTuneChoices`, which
:func:`~._training_request.train_config` turns into the run's
:class:`~napari_vmunet.training.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QLabel, QWidget

from ._bus import bus, listen
from ._controls import RunControls, browse_row, button, button_row, status_label
from ._docking import scrolling_layout
from ._pathedit import PathEdit
from ._plot import TrainingPlot
from ._training_close import CloseGuard, main_window
from ._training_data import DataSection, Pair
from ._training_model import TrainModelSection
from ._training_recipe import RecipeSection
from ._training_request import FineTuneChoices, default_output, train_config

if TYPE_CHECKING:
    import napari

POLL_MS = 200


class TrainingWidget(QWidget):
    """Fine-tune (or train) a VM-UNet on image + labels layer pairs."""

    def __init__(self, napari_viewer: napari.Viewer, parent=None):
        super().__init__(parent)
        from .. import _scan_warmup

        _scan_warmup.start()  # the CPU scan's kernels, before the first run
        from ._nextslice import NextSlicePanel

        self.viewer = napari_viewer
        self.process = None
        self._best: str | None = None
        self._last_config = None
        self._start_worker = None
        self._rank_worker = None
        self._export_dialog = None
        # closing napari's window during a run stops the run
        self._close_guard = CloseGuard(lambda: self.stop_for_close(), self)
        self.history: list = []  # every event of the current run
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)

        layout = scrolling_layout(self)  # fits a laptop screen, tabs with ours
        self.model = TrainModelSection(self.viewer)
        self.data = DataSection(
            self.viewer, self.model.paint_values, lambda text: self._say(text)
        )
        self.recipe = RecipeSection()
        self.output = PathEdit()
        self.output.setPlaceholderText('where the trained model is saved')
        save_row, _ = browse_row(self.output, self._browse_output, text='…')
        save_row.insertWidget(0, QLabel('Save to'))
        self.controls = RunControls(
            button('Start', self.start),
            [button('Stop', self.stop), button('Resume', self.resume)],
            progress=False,
        )
        self.use_button = button(
            'Use in inference',
            self.publish_best,
            tooltip='Select the best model in the inference dock',
            enabled=False,
        )
        self.export_button = button(
            'Export for bioimage.io…',
            self.export_for_bioimageio,
            tooltip='Write the best model as a bioimage.io package (.zip)',
            enabled=False,
        )
        self.plot = TrainingPlot(total_epochs=self.epochs.value())
        self.status = status_label(
            'Correct a prediction (or paint labels), then Start.'
        )
        # after each training: where the new model is least sure
        self.next_slices = NextSlicePanel(self.viewer, choose_annotations=False)
        for part in (self.data, self.model, self.recipe):
            layout.addWidget(part)
        layout.addLayout(save_row)
        # run control on one row, what to do with the result on the next:
        # five buttons in one row made the dock too wide for the image view
        layout.addLayout(self.controls.row)
        layout.addLayout(button_row(self.use_button, self.export_button))
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.status)
        layout.addWidget(self.next_slices)

        self.recipe.epochs.valueChanged.connect(self._epochs_changed)
        self.model.num_classes.valueChanged.connect(self.data.annotation_changed)
        self.model.class_names.editingFinished.connect(self.data.annotation_changed)
        self.data.labels_changed()
        self.start_from.currentIndexChanged.connect(self._follow_start_from)
        self.start_from.currentIndexChanged.connect(self.data.annotation_changed)
        self._follow_start_from()
        self.recipe.preset_changed()
        self.image_layer.currentIndexChanged.connect(self._suggest_output)
        listen(self, self._on_published)
        self._suggest_output()

    # the sections' controls, under the names tests and scripts use
    image_layer = property(lambda self: self.data.image_layer)
    labels_layer = property(lambda self: self.data.labels_layer)
    annotation = property(lambda self: self.data.annotation)
    new_scribbles_button = property(lambda self: self.data.new_scribbles_button)
    legend = property(lambda self: self.data.legend)
    scribble_warning = property(lambda self: self.data.scribble_warning)
    add_pair_button = property(lambda self: self.data.add_pair_button)
    background_button = property(lambda self: self.data.background_button)
    pair_list = property(lambda self: self.data.pair_list)
    slice_axis = property(lambda self: self.data.slice_axis)
    start_from = property(lambda self: self.model.start_from)
    browse_init = property(lambda self: self.model.browse_init)
    num_classes = property(lambda self: self.model.num_classes)
    class_names = property(lambda self: self.model.class_names)
    preset = property(lambda self: self.recipe.preset)
    epochs = property(lambda self: self.recipe.epochs)
    lr = property(lambda self: self.recipe.lr)
    batch_size = property(lambda self: self.recipe.batch_size)
    tile_size = property(lambda self: self.recipe.tile_size)
    val_fraction = property(lambda self: self.recipe.val_fraction)
    freeze_encoder = property(lambda self: self.recipe.freeze_encoder)
    device = property(lambda self: self.recipe.device)
    start_button = property(lambda self: self.controls.start)
    stop_button = property(lambda self: self.controls.stops[0])
    resume_button = property(lambda self: self.controls.stops[1])
    sparse = property(lambda self: self.data.sparse)

    # -------------------------------------------------- the sections' API
    def set_start_checkpoint(self, path: str | Path, label: str | None = None) -> None:
        """Start training from ``path`` (added to the list if needed)."""
        self.model.set_start_checkpoint(path, label)

    def mark_background_slice(self) -> None:
        """Declare the slice on screen (of the selected pair) background-only."""
        self.data.mark_background_slice()

    def new_scribble_layer(self):
        """A Labels layer for sparse strokes over the chosen image (see
        :meth:`DataSection.new_scribble_layer`)."""
        return self.data.new_scribble_layer()

    def check_scribbles(self) -> str:
        return self.data.check_scribbles()

    def training_pairs(self) -> list:
        """The ``TrainingPair`` list for the current choices (not copied yet)."""
        return self.data.training_pairs()

    # ------------------------------------------------------------- choices
    def _epochs_changed(self, value: int) -> None:
        """Before (or between) runs the plot's axis spans the epochs set."""
        if not self.running:
            self.plot.set_total_epochs(value)

    def _follow_start_from(self, *_args) -> None:
        """The preset a run from the chosen starting point needs."""
        self.recipe.follow_start(self.model.start())

    def _browse_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self,
            'Save the trained model as',
            self.output.text(),
            'napari-vmunet checkpoint (*.safetensors)',
        )
        if path:
            if not path.endswith('.safetensors'):
                path += '.safetensors'
            self.output.setText(path)

    def _suggest_output(self, *_args) -> None:
        if self.process is None and not self.output.isModified():
            layer = self.image_layer.value()
            self.output.setText(str(default_output(layer.name if layer else 'model')))

    def choices(self) -> FineTuneChoices:
        """What the widgets say, as plain values."""
        start = self.model.start()
        inference = self.model.inference_checkpoint() if start == 'inference' else None
        return FineTuneChoices(
            output=self.output.text(),
            preset=self.preset.currentData(),
            start=start,
            inference_checkpoint=inference,
            num_classes=self.num_classes.value(),
            class_names=self.class_names.text(),
            epochs=self.epochs.value(),
            lr=self.lr.value(),
            batch_size=self.batch_size.value(),
            tile_size=self.tile_size.value(),
            val_fraction=self.val_fraction.value(),
            freeze_encoder=self.freeze_encoder.isChecked(),
            annotation=self.annotation.currentData(),
            device=self.device.currentData() or 'auto',
            training_data=self.data.pairs_text(),
        )

    def config(self, resume: bool = False):
        """The ``TrainConfig`` for the dock's current settings (its folder
        is made, so that the run can write there)."""
        config = train_config(self.choices(), resume=resume)
        config.output.parent.mkdir(parents=True, exist_ok=True)
        return config

    # ------------------------------------------------------------- control
    def start(self, resume: bool = False) -> None:
        """Copy the data and start training in a separate process."""
        if self.running:
            return
        from ..training.config import OutputExistsError
        from ..training.process import TrainingProcess

        try:
            config = self.config(resume=resume)
            try:
                config.check_output()
            except OutputExistsError as err:
                if not self.confirm_overwrite(err.paths):
                    self._say('Not started: the earlier run is kept.')
                    return
                config = config.replace(overwrite=True)
            pairs = self.training_pairs()
            process = TrainingProcess(config, pairs)
        except (ValueError, OSError) as err:
            self._error(str(err))
            return
        self.process = process
        self._last_config = config
        self._best = None
        if not resume:
            self.plot.clear()
            self.history = []
        self.plot.set_total_epochs(config.epochs)
        self._set_running(True)
        self._close_guard.watch(main_window(self))
        self._say('Copying the annotated slices and starting the training process…')
        from napari.qt.threading import create_worker

        # extracting slices and handing them to the child can take a moment
        # for big volumes: do it off the GUI thread
        worker = create_worker(process.start, _ignore_errors=True)
        worker.errored.connect(self._start_failed)
        worker.returned.connect(lambda _=None: self._timer.start())
        worker.finished.connect(self._start_done)
        self._start_worker = worker
        worker.start()

    def confirm_overwrite(self, paths: list) -> bool:
        """Ask before a new run replaces an earlier run's checkpoints."""
        from qtpy.QtWidgets import QMessageBox

        names = '\n'.join(str(p) for p in paths)
        answer = QMessageBox.question(
            self,
            'Replace the earlier run?',
            f'These checkpoints exist from an earlier run:\n{names}\n\n'
            'Replace them with a new run? (Resume continues the earlier run '
            'instead.)',
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    @property
    def running(self) -> bool:
        """A run is going on (a finished one may still be exiting)."""
        proc = self.process
        return (
            proc is not None
            and proc.finished is None
            and (proc.is_alive() or self._start_worker is not None)
        )

    def stop_for_close(self) -> bool:
        """napari is closing: ask the run to stop after its current step.

        Does not wait: the child saves the resumable checkpoint and exits by
        itself (and is reaped), and at interpreter exit
        :class:`~napari_vmunet.training.TrainingProcess` waits for it.
        """
        if self.process is None or not self.running:
            return False
        self.process.stop()
        self._say('napari is closing: stopping the training after this step…')
        return True

    def _start_failed(self, err: BaseException) -> None:
        self.process = None
        self._set_running(False)
        self._error(str(err))

    def _start_done(self) -> None:
        self._start_worker = None

    def resume(self) -> None:
        """Continue the last run from its resumable checkpoint, with the
        layers as they are now (your newest corrections included)."""
        self.start(resume=True)

    def stop(self) -> None:
        """Stop after the current step (a second press kills the process)."""
        if self.process is None:
            return
        if self.stop_button.text() == 'Kill':
            self.process.kill()
            self._say('Killing the training process…')
            return
        self.process.stop()
        self.stop_button.setText('Kill')
        self._say('Stopping after the current step (press Kill to end it now)…')

    def export_for_bioimageio(self) -> None:
        """Open the bioimage.io export form for the best model so far."""
        from .bioimageio_export import open_export_dialog

        self._export_dialog = open_export_dialog(self, self._best)

    def publish_best(self) -> None:
        if self._best:
            bus.model_published.emit(self._best, 'trained here')

    def _on_published(self, path: str, reason: str) -> None:
        if reason != 'trained here' and self.start_from.findData(path) < 0:
            self.set_start_checkpoint(path)

    def _set_running(self, running: bool) -> None:
        self.controls.set_running(running)
        self.stop_button.setText('Stop')
        for w in (
            self.add_pair_button,
            self.preset,
            self.start_from,
            self.output,
            self.annotation,
        ):
            w.setEnabled(not running)

    # -------------------------------------------------------------- events
    def _poll(self) -> None:
        if self.process is None:
            self._timer.stop()
            return
        for event in self.process.poll(0):
            self.history.append(event)
            self.handle(event)

    def handle(self, event) -> None:
        """Show one training event (``training.events``) in the dock."""
        from ..training import EpochEnd, Finished, Saved, Started, Step

        match event:
            case Started():
                self._on_started(event)
            case Step():
                self.plot.add_step(
                    event.epoch - 1 + event.step / event.steps_per_epoch,
                    event.loss,
                )
                self._say(event.describe())
            case EpochEnd():
                self.plot.add_epoch(
                    event.epoch, event.train_loss, event.val_loss, event.mean_dice
                )
                self._say(event.describe())
            case Saved():
                self._on_saved(event)
            case Finished():
                self._on_finished(event)
            case _:
                raise TypeError(f'unknown training event {event!r}')

    def _on_started(self, ev) -> None:
        self.plot.set_total_epochs(ev.total_epochs)
        self.plot.set_validation(ev.n_val > 0)
        self._say(ev.describe() + (' — ' + ' '.join(ev.notes) if ev.notes else ''))

    def _on_saved(self, ev) -> None:
        if ev.kind == 'best':
            self._best = ev.path
            self.use_button.setEnabled(True)
            self.export_button.setEnabled(True)

    def _on_finished(self, ev) -> None:
        self._timer.stop()
        self._set_running(False)
        self._best = ev.best_path or self._best
        self.use_button.setEnabled(bool(self._best))
        self.export_button.setEnabled(bool(self._best))
        self.resume_button.setEnabled(bool(ev.last_path))
        text = dataclasses.replace(ev, best_path=self._best).describe()
        if ev.reason == 'error':
            self._error(text)
        else:
            self._say(text)
        if self._best and ev.reason != 'error':
            self.publish_best()  # the hot swap into the inference dock
            self.suggest_next_slices(self._best)

    # ------------------------------------------------------- next slices
    def suggest_next_slices(self, checkpoint: str) -> None:
        """Predict the (first) training volume with ``checkpoint`` in a
        worker thread and show its most uncertain slices, annotated and
        background-only ones left out (``inference.uncertainty``)."""
        pairs = self.data.used_pairs()
        if not pairs or pairs[0].labels.ndim != 3 or self._rank_worker is not None:
            return
        pair = pairs[0]
        image = pair.image
        rgb = bool(getattr(image, 'rgb', False))
        if image.data.ndim - (1 if rgb else 0) != 3:
            return
        axis = self.slice_axis.value()
        device = self.device.currentData() or 'auto'
        from napari.qt.threading import create_worker

        def job():
            from ..inference import Predictor

            predictor = Predictor(checkpoint, device=device)
            result = yield from predictor.iter_predict(
                image.data, slice_axis=axis, rgb=rgb, return_uncertainty=True
            )
            return result

        worker = create_worker(job, _ignore_errors=True)
        worker.yielded.connect(
            lambda step: self.next_slices.say(
                f"Ranking the slices by the new model's uncertainty: {step.describe()}"
            )
        )
        worker.returned.connect(lambda result: self._show_next_slices(pair, result))
        worker.errored.connect(
            lambda err: self.next_slices.say(f'Could not rank the slices: {err}')
        )
        worker.finished.connect(self._rank_done)
        self._rank_worker = worker
        self.next_slices.say("Ranking the slices by the new model's uncertainty…")
        worker.start()

    def _show_next_slices(self, pair: Pair, result) -> None:
        self.next_slices.show_scores(
            result.slice_uncertainty,
            pair.image,
            self.slice_axis.value(),
            result.labels.shape,
            result.slice_axis,
            annotations=pair.labels,
            excluded=tuple(sorted(pair.background)),
        )

    def _rank_done(self) -> None:
        self._rank_worker = None

    # ---------------------------------------------------------------- misc
    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _error(self, text: str) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(text)
        show_error(text)

    def closeEvent(self, event) -> None:  # pragma: no cover - Qt teardown
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop a running training (used when the dock or napari closes)."""
        self._timer.stop()
        if self._rank_worker is not None:
            self._rank_worker.quit()
        if self.process is not None:
            self.process.shutdown()
