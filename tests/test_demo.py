"""The README's main job: ``napari-vmunet demo`` with the built-in models."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from napari_vmunet.cli.demo import dice, held_out, open_demo_viewer
from napari_vmunet.io import load_sample, read_image


def test_dice():
    a = np.array([1, 1, 0, 0], bool)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0


def test_held_out_parts_are_what_training_did_not_see():
    _, nuclei = load_sample('nuclei')
    assert held_out('nuclei', nuclei) == (slice(320, None),)
    _, brain = load_sample('brain')
    (z,) = held_out('brain', brain)
    assert len(z) == brain.shape[0] - len(range(0, brain.shape[0], 4))
    assert not np.any(z % 4 == 0)


def run_demo(sample, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'napari_vmunet',
            'demo',
            '--headless',
            '--sample',
            sample,
            '--output',
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def held_out_dice(out: str) -> list[float]:
    return [float(x) for x in re.findall(r'([\d.]+) on held-out', out)]


def test_headless_nuclei_demo_reaches_its_documented_dice(tmp_path):
    out = run_demo('nuclei', tmp_path)
    scores = held_out_dice(out)
    assert scores and min(scores) >= 0.9, out
    labels = read_image(tmp_path / 'nuclei_labels.tif').data
    assert labels.shape == (512, 512)
    overlay = read_image(tmp_path / 'nuclei_overlay.png')
    assert overlay.data.shape == (512, 512, 3)
    assert 'not a general or clinical model' in out


@pytest.mark.slow
def test_headless_brain_demo_reaches_its_documented_dice(tmp_path):
    out = run_demo('brain', tmp_path)
    scores = held_out_dice(out)
    assert len(scores) == 2 and min(scores) >= 0.9, out  # grey and white matter
    labels = read_image(tmp_path / 'brain_labels.nii.gz')
    brain, _ = load_sample('brain')
    np.testing.assert_allclose(labels.affine, brain.affine)


@pytest.mark.gui
def test_demo_viewer_has_the_sample_the_model_and_both_docks(qtbot):
    viewer = open_demo_viewer('nuclei')
    try:
        docks = viewer.window.dock_widgets
        names = {type(w).__name__ for w in docks.values()}
        assert {'InferenceWidget', 'TrainingWidget'} <= names
        inference = next(
            w for w in docks.values() if type(w).__name__ == 'InferenceWidget'
        )
        assert inference.checkpoint_path().endswith('demo-nuclei.safetensors')
        assert inference.image_layer.value().name.startswith('nuclei')
        qtbot.waitUntil(
            lambda: 'parameters' in inference.model_info.text(), timeout=30_000
        )
    finally:
        viewer.close()


def _shown(dock) -> bool:
    """Whether a dock is on screen (the current tab of its group)."""
    return dock.isVisible() and not dock.visibleRegion().isEmpty()


# (from test_dock_layout.py: a directly opened Viewer must not follow
# make_napari_viewer tests in its module, or napari registers our commands twice)
@pytest.mark.gui
def test_the_demo_shows_inference_first_and_a_wide_image_view(qtbot):
    viewer = open_demo_viewer('nuclei')
    try:
        docks = viewer.window._wrapped_dock_widgets
        qtbot.wait(500)
        infer = next(d for n, d in docks.items() if n.startswith('Inference'))
        train = next(d for n, d in docks.items() if n.startswith('Fine-tune'))
        assert _shown(infer) and not _shown(train)
        window = viewer.window._qt_window
        canvas = viewer.window._qt_viewer.canvas.native
        share = canvas.width() / window.width()
        assert share > 0.45, (canvas.width(), window.width())
        room = window.screen().availableGeometry()
        assert window.width() <= room.width() and window.height() <= room.height()
        # the image itself is in view at a useful size
        assert canvas.height() > 0.6 * window.height()
        qtbot.waitUntil(
            lambda: 'parameters' in infer.widget().model_info.text(), timeout=30_000
        )
        # the screenshot: what a newcomer sees is the window with the nuclei
        # large in it, not a sliver between the docks
        shot = viewer.screenshot(canvas_only=False, flash=False)
        ratio = shot.shape[1] / window.width()  # device pixels per pixel
        assert abs(shot.shape[0] - ratio * window.height()) <= 2 * ratio
        view = viewer.screenshot(canvas_only=True, flash=False)
        # the canvas is black where there is no image; the sample's dimmest
        # pixels are still above the lower contrast limit
        lit = (view[..., :3].max(axis=-1) > 0).mean()
        side = min(view.shape[:2]) / max(view.shape[:2])
        assert lit > 0.8 * side, (lit, side, view.shape)
        assert view.shape[1] > 0.45 * shot.shape[1]
    finally:
        viewer.close()
