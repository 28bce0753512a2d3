"""Closing napari during a training stops the training process (issue #16,
item 5).

The check runs as a script in a subprocess, as a user's session would: it
opens napari, starts a fine-tuning in the dock, closes the window and then
*goes on running* without an event loop, watching the training child.  The
child must be gone (exited and reaped) and the resumable checkpoint written.
A tiny model on 32-pixel tiles with one thread keeps it to seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path


    def running(pid):
        import psutil

        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


    def main(out):
        import napari
        import numpy as np
        import psutil
        import torch
        from qtpy.QtWidgets import QApplication

        from napari_vmunet.checkpoint import default_metadata, save_checkpoint
        from napari_vmunet.model import VMUNet

        torch.manual_seed(0)
        model = VMUNet(
            num_classes=1, dims=(8, 16, 32, 64),
            depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1),
        )
        meta = default_metadata(model.config, class_names=['bg', 'blob'], tile_size=32)
        start = save_checkpoint(model, out / 'start.safetensors', meta)

        rng = np.random.default_rng(0)
        image = rng.normal(20, 5, (64, 64)).astype(np.float32)
        labels = np.zeros((64, 64), np.uint8)
        labels[10:30, 20:40] = 1
        image[labels > 0] += 60
        viewer = napari.Viewer(show=True)
        img = viewer.add_image(image, name='blob')
        lab = viewer.add_labels(labels, name='blob labels')
        _, train = viewer.window.add_plugin_dock_widget('napari-vmunet', 'Fine-tune')
        train.image_layer.set_value(img)
        train.labels_layer.set_value(lab)
        train.set_start_checkpoint(start)
        train.epochs.setValue(1000)  # far longer than the test
        train.batch_size.setValue(2)
        train.tile_size.setValue(32)
        train.val_fraction.setValue(0.0)
        train.output.setText(str(out / 'tuned.safetensors'))
        train.device.setCurrentText('cpu')
        train.start()

        app = QApplication.instance()
        deadline = time.monotonic() + 120
        while not any(type(e).__name__ == 'Step' for e in train.history):
            app.processEvents()
            time.sleep(0.05)
            if time.monotonic() > deadline:
                sys.exit('no training step within 120 s')
        pid = train.process.pid
        assert running(pid)

        viewer.close()  # File > Close Window, or the window's close button
        closed = time.monotonic()
        # the session goes on without an event loop
        while running(pid) and time.monotonic() - closed < 30:
            time.sleep(0.1)
        gone = not psutil.pid_exists(pid) or not running(pid)
        reaped = not psutil.pid_exists(pid)
        print(json.dumps({
            'pid': pid,
            'gone': gone,
            'reaped': reaped,
            'seconds': round(time.monotonic() - closed, 2),
        }))


    if __name__ == '__main__':
        main(Path(sys.argv[1]))
    """
)


def test_closing_napari_stops_the_training_and_keeps_it_resumable(tmp_path):
    from napari_vmunet.checkpoint import load_checkpoint
    from napari_vmunet.training import last_path

    script = tmp_path / 'session.py'
    script.write_text(SCRIPT)
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        NAPARI_CONFIG=str(tmp_path / 'napari-settings.yaml'),  # not the user's
        XDG_CONFIG_HOME=str(tmp_path / 'config'),
    )
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['gone'], report  # stopped, not left running
    assert report['reaped'], report  # and not left as a zombie
    assert report['seconds'] < 20, report
    last = last_path(tmp_path / 'tuned.safetensors')
    assert last.exists()
    state = load_checkpoint(last).training_state
    assert state['step'] >= 1 or state['epoch'] >= 1  # resumable from there
