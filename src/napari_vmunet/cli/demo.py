"""``napari-vmunet demo``: the whole product on bundled data, nothing to download.

With a display it opens napari with a sample image, the built-in demo model
selected in the inference dock and the fine-tune dock ready.  With
``--headless`` (or when there is no display) it predicts the sample with the
demo model, prints the Dice against the sample's human/reference labels, and
writes the labels and an overlay picture.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import UserError

DEMO_MODELS = {'nuclei': 'demo-nuclei', 'brain': 'demo-brain'}

#: What the bundled demo models were trained on (``scripts/train_demo_models.py``
#: builds the training files from this); everything else is held out.
NUCLEI_TRAIN_ROWS = 320  # rows 0..319 of the 512x512 nuclei image
BRAIN_TRAIN_EVERY = 4  # axial slices z % 4 == 0 of the MNI152 volume
#: The demo window: wide enough that the image keeps about half of it next
#: to napari's layer list and our dock (made smaller on smaller screens).
DEMO_WINDOW = (1400, 860)


def training_part(sample: str, image: np.ndarray, labels: np.ndarray):
    """The image and labels a demo model was trained on.

    Nuclei: the top rows.  Brain: the whole volume with labels kept only on
    every fourth axial slice -- a partially annotated volume, whose empty
    slices training skips.
    """
    if sample == 'nuclei':
        return image[:NUCLEI_TRAIN_ROWS], labels[:NUCLEI_TRAIN_ROWS]
    partial = np.zeros_like(labels)
    partial[::BRAIN_TRAIN_EVERY] = labels[::BRAIN_TRAIN_EVERY]
    return image, partial


def held_out(sample: str, labels: np.ndarray) -> tuple:
    """Index of the part of a sample the demo model never saw in training."""
    if sample == 'nuclei':
        return (slice(NUCLEI_TRAIN_ROWS, None),)
    z = np.arange(labels.shape[0])
    return (z[z % BRAIN_TRAIN_EVERY != 0],)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        'demo',
        help='try it on bundled data (opens napari)',
        description=__doc__.splitlines()[0].split(': ', 1)[1],
    )
    p.add_argument(
        '--sample',
        choices=sorted(DEMO_MODELS),
        default='nuclei',
        help='which bundled sample to use (default: nuclei)',
    )
    p.add_argument(
        '--headless',
        action='store_true',
        help='no window: predict, print Dice, write files',
    )
    p.add_argument(
        '--output',
        '-o',
        default='vmunet-demo',
        help='folder for the headless outputs (default: ./vmunet-demo)',
    )
    p.add_argument('--device', default='auto')
    p.set_defaults(func=run)


def has_display() -> bool:
    if sys.platform in ('darwin', 'win32'):
        return True
    return bool(os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def run(args: argparse.Namespace) -> int:
    if args.headless:
        return run_headless(args.sample, Path(args.output), args.device)
    if not has_display():
        print(
            'No display found: running the headless demo instead '
            '(use a desktop session, or xvfb-run, to open napari).'
        )
        return run_headless(args.sample, Path(args.output), args.device)
    return run_viewer(args.sample, args.device)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    pred, truth = pred.astype(bool), truth.astype(bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def demo_checkpoint(sample: str) -> Path:
    from ..zoo import builtin_checkpoints

    models = builtin_checkpoints()
    name = DEMO_MODELS[sample]
    if name not in models:
        raise UserError(
            f'the built-in model {name!r} is missing from this installation '
            f'(found: {", ".join(models) or "none"}); reinstall napari-vmunet'
        )
    return models[name]


def evaluate(
    sample: str, labels: np.ndarray, truth: np.ndarray, class_names: list[str]
) -> list[str]:
    """Human-readable Dice lines: per class, on everything and on the part
    the demo model was not trained on."""
    part = held_out(sample, truth)
    where = 'rows 320+' if sample == 'nuclei' else 'slices z % 4 != 0'
    pairs = (
        [('nuclei (foreground)', labels > 0, truth > 0)]
        if sample == 'nuclei'
        else [
            (name, labels == c, truth == c) for c, name in enumerate(class_names) if c
        ]
    )
    return [
        f'{name}: Dice {dice(pred, true):.3f} on all, '
        f'{dice(pred[part], true[part]):.3f} on held-out {where}'
        for name, pred, true in pairs
    ]


def overlay_png(path: Path, image: np.ndarray, labels: np.ndarray) -> Path:
    """A picture of the labels' outlines on the image (2D), atomically."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    from ..inference import normalize

    grey = normalize(
        np.asarray(image, np.float32)[None],
        {'mode': 'percentile', 'low': 1, 'high': 99.8, 'range': [0, 1]},
    )[0]
    rgb = label2rgb(labels, image=grey, alpha=0.3, bg_label=0, image_alpha=1)
    rgb[find_boundaries(labels, mode='inner')] = (1.0, 0.9, 0.0)
    from ..io import write_image

    return write_image(path, (rgb * 255).astype(np.uint8), axes='YXC')


def run_headless(sample: str, output: Path, device: str = 'auto') -> int:
    from .._files import check_writable_folder
    from ..checkpoint import load_checkpoint
    from ..inference import Predictor
    from ..io import load_sample, write_labels

    check_writable_folder(output, 'demo results')  # before predicting
    image, truth = load_sample(sample)
    checkpoint = load_checkpoint(demo_checkpoint(sample))
    predictor = Predictor(checkpoint, device=device)
    print(
        f'Predicting the {sample} sample {image.data.shape} with '
        f'{checkpoint.path.name} on {predictor.device}...'
    )
    result = predictor.predict(
        image.data, channel_axis=image.channel_axis, rgb=image.rgb
    )
    ext = (
        '.nii.gz' if image.source and image.source.name.endswith('.nii.gz') else '.tif'
    )
    labels_path = write_labels(
        output / f'{sample}_labels{ext}', result.labels, like=image
    )
    if result.labels.ndim == 3:
        z = int(np.argmax((truth > 0).sum(axis=(1, 2))))
        picture = overlay_png(
            output / f'{sample}_overlay.png', image.data[z], result.labels[z]
        )
    else:
        picture = overlay_png(
            output / f'{sample}_overlay.png', image.data, result.labels
        )
    print(f'done in {result.seconds:.1f} s')
    for line in evaluate(sample, result.labels, truth, result.class_names):
        print(line)
    print(f'labels: {labels_path}\noverlay: {picture}')
    print(
        'This is a demonstration model trained on this bundled sample, '
        'not a general or clinical model.'
    )
    return 0


def open_demo_viewer(sample: str, device: str = 'auto'):
    """A napari viewer with the sample, the demo model selected in the
    inference dock and the fine-tune dock ready (not yet shown modally)."""
    import napari
    from qtpy.QtCore import QTimer

    viewer = napari.Viewer(title='napari-vmunet demo')
    viewer.open_sample('napari-vmunet', sample)
    _, inference = viewer.window.add_plugin_dock_widget('napari-vmunet', 'Inference')
    _, training = viewer.window.add_plugin_dock_widget(
        'napari-vmunet', 'Fine-tune', tabify=True
    )
    checkpoint = demo_checkpoint(sample)
    inference.set_checkpoint(checkpoint)
    training.set_start_checkpoint(checkpoint, f'built-in: {checkpoint.stem}')
    images = [ly for ly in viewer.layers if isinstance(ly, napari.layers.Image)]
    if images:
        inference.set_image_layer(images[0])
    if device != 'auto':
        inference.device.setCurrentText(device)
    fit_window(viewer, inference)
    show_first(inference)
    # napari lays the docks out again once its event loop runs (and may
    # bring the tab added last forward): raise the inference dock after that
    QTimer.singleShot(0, lambda: show_first(inference))
    return viewer


def fit_window(viewer, dock_widget, size: tuple[int, int] = DEMO_WINDOW) -> None:
    """Size the window so the image view gets most of it.

    At napari's default size the docks left the image ~170 px: ``size``,
    capped by the screen, and the dock at its narrowest width leave it about
    half of the window.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QDockWidget

    screen = dock_widget.screen() or QApplication.primaryScreen()
    room = screen.availableGeometry()
    viewer.window.resize(min(size[0], room.width()), min(size[1], room.height()))
    dock = dock_widget.parentWidget()
    main = dock.parentWidget()
    # every dock beside the image at its narrowest (napari's layer list too)
    docks = [
        d
        for d in main.findChildren(QDockWidget)
        if d.isVisibleTo(main)
        and not d.isFloating()
        and main.dockWidgetArea(d)
        in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea)
    ]
    main.resizeDocks(
        docks, [d.minimumSizeHint().width() for d in docks], Qt.Orientation.Horizontal
    )


def show_first(dock_widget) -> None:
    """Bring ``dock_widget``'s tab to the front of its tab group."""
    import contextlib

    with contextlib.suppress(RuntimeError):  # the window closed meanwhile
        dock_widget.parentWidget().raise_()


def run_viewer(sample: str, device: str = 'auto') -> int:
    import napari

    open_demo_viewer(sample, device)
    napari.run()
    return 0
