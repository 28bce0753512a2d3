"""How long napari's event loop stalls while the docks work.

A QTimer on the GUI thread ticks every 10 ms; the longest gap between ticks
minus 10 ms is the longest time the viewer could not react (repaint, mouse,
keyboard).  Measured side by side in one napari session:

1. idle: the viewer with the sample open, nothing running;
2. inference: the inference dock predicting the 189-slice brain volume with
   the built-in demo model (a generator worker yielding per tile batch);
3. training + painting: the fine-tune dock training (separate process) on the
   nuclei sample while a timer paints into the labels layer every 50 ms, as a
   user correcting labels would.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/responsiveness.py

Target: longest stall <= 100 ms while inference or training runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_vmunet._widgets._stall import StallMonitor
from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.zoo import builtin_checkpoints


def spin(condition, timeout: float) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.001)


def measure(name: str, start, done, timeout: float = 1800) -> dict:
    monitor = StallMonitor(interval_ms=10)
    monitor.start()
    t0 = time.monotonic()
    start()
    spin(done, timeout)
    seconds = time.monotonic() - t0
    monitor.stop()
    gaps = [1000 * g for g in monitor.gaps]
    return {
        'case': name,
        'seconds': seconds,
        'ticks': len(gaps),
        'median_gap': statistics.median(gaps) if gaps else float('nan'),
        'p99_stall': monitor.percentile_stall_ms(99),
        'longest_stall': monitor.longest_stall_ms,
    }


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    results = []

    # 1. idle, with the brain volume open
    viewer.open_sample('napari-vmunet', 'brain')
    end = time.monotonic() + 5
    results.append(measure('idle (5 s)', lambda: None, lambda: time.monotonic() > end))

    # 2. inference on the brain volume
    infer = InferenceWidget(viewer)
    viewer.window.add_dock_widget(infer)
    infer.set_checkpoint(builtin_checkpoints()['demo-brain'])
    infer.set_image_layer(viewer.layers[0])
    spin(lambda: 'parameters' in infer.model_info.text(), 60)
    results.append(
        measure('inference, 189-slice volume', infer.run, lambda: infer._worker is None)
    )

    # 3. training while painting labels
    viewer.layers.clear()
    viewer.open_sample('napari-vmunet', 'nuclei')
    image, labels = viewer.layers[0], viewer.layers[1]
    train = TrainingWidget(viewer)
    viewer.window.add_dock_widget(train)
    train.image_layer.set_value(image)
    train.labels_layer.set_value(labels)
    train.set_start_checkpoint(builtin_checkpoints()['demo-nuclei'])
    train.epochs.setValue(3)
    train.output.setText(str(Path(tempfile.mkdtemp()) / 'tuned.safetensors'))
    rng = np.random.default_rng(0)
    painter = QTimer()
    painter.setInterval(50)
    painter.timeout.connect(
        lambda: labels.paint(tuple(rng.integers(0, 512, 2)), 1, refresh=True)
    )

    def start_training():
        painter.start()
        train.start()

    results.append(
        measure(
            'training + painting every 50 ms',
            start_training,
            lambda: train.process is not None and train.process.finished is not None,
        )
    )
    painter.stop()
    viewer.close()

    print(
        f'{"case":32} {"seconds":>8} {"ticks":>7} {"median gap ms":>14} '
        f'{"p99 stall ms":>13} {"longest stall ms":>17}'
    )
    for r in results:
        print(
            f'{r["case"]:32} {r["seconds"]:8.1f} {r["ticks"]:7d} '
            f'{r["median_gap"]:14.1f} {r["p99_stall"]:13.1f} '
            f'{r["longest_stall"]:17.1f}'
        )
    worst = max(r['longest_stall'] for r in results[1:])
    print(
        f'\nlongest stall while working: {worst:.0f} ms (target <= 100 ms): '
        f'{"PASS" if worst <= 100 else "FAIL"}'
    )


if __name__ == '__main__':
    main()
