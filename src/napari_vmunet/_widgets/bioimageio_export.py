"""*Export for bioimage.io…*: a small form over
:func:`napari_vmunet.bioimageio.export_bioimageio`.

The inference and fine-tune docks open it for their current model.  It asks
for what the CLI's ``export-bioimageio`` takes (name, description, authors,
license, citations, cover, test image, output), runs the export in a worker
thread (a few seconds: one prediction and a zip) and reports the written
file or the problem in the form itself, which stays open to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from ._controls import browse_row, status_label

#: offered in the license box (any SPDX identifier may be typed)
LICENSES = ('CC-BY-4.0', 'CC0-1.0', 'MIT', 'BSD-3-Clause', 'Apache-2.0')


def default_package_path(checkpoint: str | os.PathLike) -> Path:
    """``model.safetensors`` -> ``model.bioimageio.zip`` next to it (a
    built-in model's folder may not be writable: then the home folder)."""
    path = Path(checkpoint)
    stem = path.name.split('.')[0] or 'model'
    folder = path.parent if os.access(path.parent, os.W_OK) else Path.home()
    return folder / f'{stem}.bioimageio.zip'


class ExportDialog(QDialog):
    """The export form for one checkpoint (a path)."""

    def __init__(self, checkpoint: str | os.PathLike, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle('Export for bioimage.io')
        self.checkpoint = str(checkpoint)
        self.written: Path | None = None
        self._worker = None

        layout = QVBoxLayout(self)
        intro = QLabel(
            f'Write <b>{Path(self.checkpoint).name}</b> as a bioimage.io model '
            'package (spec 0.5) for bioimageio.core, ilastik, deepImageJ, '
            'QuPath and the bioimage.io zoo.'
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        form = QFormLayout()
        self.name = QLineEdit()
        self.name.setPlaceholderText('default: VM-UNet + the file name')
        form.addRow('Name', self.name)
        self.description = QPlainTextEdit()
        self.description.setPlaceholderText(
            'one paragraph; default: from the class names and the notes'
        )
        self.description.setMaximumHeight(70)
        form.addRow('Description', self.description)
        self.authors = QLineEdit()
        self.authors.setPlaceholderText('Jane Doe; John Smith')
        self.authors.setToolTip('who trained the model, separated by ";"')
        form.addRow('Authors', self.authors)
        self.license = QComboBox()
        self.license.setEditable(True)
        self.license.addItems(LICENSES)
        self.license.setToolTip('an SPDX license identifier')
        form.addRow('License', self.license)
        self.cite = QPlainTextEdit()
        self.cite.setPlaceholderText(
            'one per line: TEXT|DOI or TEXT|URL (the VM-UNet paper is always cited)'
        )
        self.cite.setMaximumHeight(60)
        form.addRow('Citations', self.cite)
        self.cover = self._file_row(
            form, 'Cover', 'default: made from the test prediction', self._pick_cover
        )
        self.test_image = self._file_row(
            form,
            'Test image',
            'default: the bundled nuclei sample (or type: brain)',
            self._pick_test_image,
        )
        self.output = self._file_row(form, 'Save to', '', self._pick_output)
        self.output.setText(str(default_package_path(self.checkpoint)))
        layout.addLayout(form)
        self.status = status_label()
        layout.addWidget(self.status)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.export_button = self.buttons.addButton(
            'Export', QDialogButtonBox.ButtonRole.AcceptRole
        )
        self.cancel_button = self.buttons.button(QDialogButtonBox.StandardButton.Cancel)
        self.export_button.clicked.connect(self.export)
        self.cancel_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)
        self.setMinimumWidth(480)

    def _file_row(self, form: QFormLayout, label: str, hint: str, pick) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(hint)
        row, _ = browse_row(edit, pick, text='…')
        form.addRow(label, row)
        return edit

    def _pick_cover(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, 'Cover image', '', 'Images (*.png *.jpg *.jpeg *.gif)'
        )
        if path:
            self.cover.setText(path)

    def _pick_test_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, 'Test image', '', 'All files (*)')
        if path:
            self.test_image.setText(path)

    def _pick_output(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, 'Save the package', self.output.text(), 'Zip (*.zip)'
        )
        if path:
            self.output.setText(path if path.endswith('.zip') else path + '.zip')

    # ------------------------------------------------------------ running
    def options(self) -> dict:
        """The form's fields as :func:`export_bioimageio` arguments."""
        cites = [c.strip() for c in self.cite.toPlainText().splitlines() if c.strip()]
        return {
            'authors': [self.authors.text()],
            'name': self.name.text().strip() or None,
            'description': self.description.toPlainText().strip() or None,
            'license_id': self.license.currentText().strip(),
            'cite': cites,
            'cover': self.cover.text().strip() or None,
            'test_image': self.test_image.text().strip() or None,
        }

    def export(self) -> None:
        """Check the output, then export in a worker thread."""
        from napari.qt.threading import create_worker

        from ..bioimageio import export_bioimageio

        text = self.output.text().strip()
        if not text:
            self._error('choose where to save the package (a .zip file)')
            return
        output = Path(text).expanduser()
        if output.exists():
            self._error(f'{output} already exists; choose another name')
            return
        worker = create_worker(
            export_bioimageio,
            self.checkpoint,
            output,
            _ignore_errors=True,
            **self.options(),
        )
        worker.returned.connect(self._done)
        worker.errored.connect(lambda err: self._error(str(err)))
        worker.finished.connect(self._finished)
        self._worker = worker
        self._set_running(True)
        self.status.setStyleSheet('')
        self.status.setText(f'Exporting to {output.name}…')
        worker.start()

    def is_running(self) -> bool:
        return self._worker is not None

    def _set_running(self, running: bool) -> None:
        self.export_button.setEnabled(not running)
        # the export cannot be interrupted halfway (it takes seconds)
        self.cancel_button.setEnabled(not running)

    def _done(self, path: Path) -> None:
        self.written = Path(path)
        self.status.setStyleSheet('')
        self.status.setText(f'Wrote {path}')
        self.accept()

    def _error(self, text: str) -> None:
        self.status.setStyleSheet('color: #e05050')
        self.status.setText(f'Not exported: {text}')

    def _finished(self) -> None:
        self._worker = None
        self._set_running(False)

    def reject(self) -> None:
        if self._worker is None:
            super().reject()


def open_export_dialog(parent: QWidget, checkpoint: str | None) -> ExportDialog | None:
    """Open the form for ``checkpoint`` (non-blocking); None when there is
    no model to export."""
    if not checkpoint:
        return None
    dialog = ExportDialog(checkpoint, parent)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
    dialog.open()
    return dialog
