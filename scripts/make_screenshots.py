"""Make the documentation's screenshots from real napari sessions.

    xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python scripts/make_screenshots.py [nuclei] [brain] [--no-training]

Every picture is a run of the actual docks: the nuclei sample predicted with
the built-in demo model (inference dock), the brain volume
predicted slice by slice, and a short fine-tuning run on the brain labels
(training dock, live plot).  Writes ``docs/images/*.png``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.zoo import builtin_checkpoints

OUT = Path(__file__).resolve().parents[1] / 'docs' / 'images'
SIZE = (1500, 950)


def wait(condition, timeout: float = 600) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError('the docks did not finish in time')
        app.processEvents()
        time.sleep(0.02)


def viewer_with_docks(sample: str):
    viewer = napari.Viewer(show=True, title='napari-vmunet')
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample('napari-vmunet', sample)
    infer = InferenceWidget(viewer)
    viewer.window.add_dock_widget(infer, name='VM-UNet inference', area='right')
    train = TrainingWidget(viewer)
    viewer.window.add_dock_widget(
        train, name='VM-UNet fine-tune', area='right', tabify=True
    )
    infer.set_checkpoint(builtin_checkpoints()[f'demo-{sample}'])
    infer.device.setCurrentText('cpu')
    images = [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]
    infer.set_image_layer(images[0])
    wait(lambda: 'parameters' in infer.model_info.text())
    return viewer, infer, train


def shot(viewer, name: str) -> None:
    QApplication.instance().processEvents()
    time.sleep(0.3)
    QApplication.instance().processEvents()
    viewer.screenshot(str(OUT / name), canvas_only=False, flash=False)
    print('wrote', OUT / name)


def main() -> None:
    import sys

    training = '--no-training' not in sys.argv
    parts = [a for a in sys.argv[1:] if not a.startswith('--')] or ['nuclei', 'brain']
    OUT.mkdir(parents=True, exist_ok=True)
    if 'nuclei' in parts:
        nuclei()
    if 'brain' in parts:
        brain(training)


def nuclei() -> None:
    """Predict the nuclei sample with the demo model."""
    viewer, infer, train = viewer_with_docks('nuclei')
    viewer.layers[1].visible = False  # the ground truth; the prediction shows
    infer.run()
    wait(lambda: infer._worker is None)
    infer.parentWidget().raise_()
    shot(viewer, 'inference-dock.png')
    viewer.close()


def brain(training: bool = True) -> None:
    """The brain volume predicted slice by slice, then (``training``) a few
    epochs of fine-tuning on its tissue labels (validation slices give a
    Dice curve; 30-40 minutes on 2 busy cores)."""
    viewer, infer, train = viewer_with_docks('brain')
    viewer.layers[1].visible = False
    infer.run()
    wait(lambda: infer._worker is None, timeout=1800)
    viewer.dims.set_point(0, viewer.dims.range[0].start + 95)
    infer.parentWidget().raise_()
    shot(viewer, 'brain-volume.png')
    if not training:
        viewer.close()
        return
    truth = viewer.layers[1]
    train.image_layer.set_value(viewer.layers[0])
    train.labels_layer.set_value(truth)
    train.epochs.setValue(5)
    # a fresh folder: the dock never overwrites a model that is already there
    # (an earlier run's would stop this one at its overwrite question)
    out = Path(tempfile.mkdtemp(prefix='napari-vmunet-docs-'))
    train.output.setText(str(out / 'brain-tuned.safetensors'))
    train.parentWidget().raise_()
    train.start()
    wait(
        lambda: train.process is not None and train.process.finished is not None,
        timeout=3600,
    )
    shot(viewer, 'training-dock.png')
    viewer.close()


if __name__ == '__main__':
    main()
