"""How long napari's event loop stalls while the docks work.

A QTimer on the GUI thread ticks every 10 ms; the longest gap between ticks
minus 10 ms is the longest time the viewer could not react (repaint, mouse,
keyboard).  Measured side by side in one napari session:

1. idle: the viewer with the sample open, nothing running;
2. inference: the inference dock predicting the 189-slice brain volume with
   the built-in demo model (a generator worker yielding per tile batch),
   split into the prediction itself and the moment the result layer is
   added -- beside napari's own ``add_labels`` of the same array, the floor
   for any plugin that returns a layer;
3. painting into the labels layer every 50 ms (a timer, as a user correcting
   labels would), first alone, then while the fine-tune dock trains on the
   nuclei sample in its separate process;
4. Measure in the inference dock with "one id per object" and "split
   touching objects" on a 200x512x512 labels layer of ~3700 touching balls
   (benchmarks/measure.py draws them), then showing the table.

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/responsiveness.py
    ... python benchmarks/responsiveness.py --only measure    # case 4 only
    ... python benchmarks/responsiveness.py --only inference  # case 2 only

Target: longest stall <= 100 ms while inference or training runs.
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_vmunet._widgets.inference import InferenceWidget
from napari_vmunet._widgets.training import TrainingWidget
from napari_vmunet.zoo import builtin_checkpoints

# the stall monitor is a test helper, not part of the installed package
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tests'))
from stall_monitor import StallMonitor  # noqa: E402

#: Seconds the event loop keeps being watched after the work is done.
SETTLE_S = 0.5


def spin(condition, timeout: float) -> None:
    app = QApplication.instance()
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        app.processEvents()
        time.sleep(0.001)


class FullCollections:
    """Times Python's full (generation 2) garbage collections: one holds
    the GIL for its whole length, so every thread, the GUI's included,
    waits for it."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._began = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if info['generation'] != 2:
            return
        if phase == 'start':
            self._began = time.perf_counter()
        else:
            self.seconds.append(time.perf_counter() - self._began)

    def __enter__(self) -> FullCollections:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self)


def settle() -> None:
    """Spin the event loop for :data:`SETTLE_S`: after a case, for the
    repaint of its last change; before one, so that a dock that just loaded
    its model lays itself out (its first layout with the model's description
    widens it, and napari redraws the narrower canvas, ~80 ms).  No click
    lands that fast, and counting it would charge the dock's opening to the
    work measured next."""
    end = time.monotonic() + SETTLE_S
    spin(lambda: time.monotonic() > end, SETTLE_S + 1)


def measure(name: str, start, done, timeout: float = 1800, split=None) -> list:
    """Run ``start()``, spin the event loop until ``done()``; one result row,
    or two when ``split()`` returns the perf_counter time at which the work
    ended and the GUI began adding its result (those stalls are napari's
    cost of adding a layer, reported on their own row)."""
    monitor = StallMonitor(interval_ms=10)
    monitor.start()
    t0 = time.monotonic()
    with FullCollections() as collections:
        start()
        spin(done, timeout)
        seconds = time.monotonic() - t0
        settle()  # the repaint after the last change
    monitor.stop()
    cut = split() if split else None
    gaps = [1000 * g for g in monitor.gaps]
    row = {
        'case': name,
        'seconds': seconds,
        'ticks': len(gaps),
        'median_gap': statistics.median(gaps) if gaps else float('nan'),
        'p99_stall': monitor.percentile_stall_ms(99),
        'longest_stall': monitor.longest_stall_between_ms(end=cut or float('inf')),
        'full_gc': collections.seconds,
    }
    if cut is None:
        return [row]
    after = {
        'case': '  then adding the result layer',
        'seconds': float('nan'),
        'ticks': sum(t >= cut for t in monitor.ends),
        'median_gap': float('nan'),
        'p99_stall': float('nan'),
        'longest_stall': monitor.longest_stall_between_ms(start=cut),
        'full_gc': [],
        'napari': True,
    }
    return [row, after]


def measure_objects(viewer) -> list:
    """Case 4: objects and measurements of a big volume from the dock."""
    from measure import balls

    labels = viewer.add_labels(balls(), name='balls', scale=(2.0, 1.0, 1.0))
    infer = InferenceWidget(viewer)
    viewer.window.add_dock_widget(infer)
    # the dock loads its model in a thread when it opens (importing torch
    # the first time); that is not the measurement
    spin(lambda: 'parameters' in infer.model_info.text(), 120)
    panel = infer.objects
    panel.labels_layer.set_value(labels)
    panel.objects.setChecked(True)
    panel.split.setChecked(True)
    settle()
    done, result_at = [], []
    panel.measured.connect(lambda table: done.append(table.n_rows))
    on_measured = panel._on_measured

    def record(layer, value):
        result_at.append(time.perf_counter())
        on_measured(layer, value)

    panel._on_measured = record  # the worker's result arrives here
    rows = measure(
        'objects + measure, 200x512x512',
        panel.measure,
        lambda: bool(done) and panel._worker is None,
        split=lambda: result_at[0] if result_at else None,
    )
    rows[0]['case'] = f'objects + measure ({done[0]} obj)'
    rows[1]['case'] = '  then the objects layer + table'

    # napari's own cost of adding the same objects layer, for comparison
    objects = viewer.layers[-1]
    added = []
    rows += measure(
        '  napari: add_labels(same objects)',
        lambda: QTimer.singleShot(
            100,
            lambda: added.append(
                viewer.add_labels(objects.data.copy(), scale=objects.scale)
            ),
        ),
        lambda: bool(added),
    )
    rows[-1]['napari'] = True
    viewer.layers.remove(added[0])
    return rows


def measure_inference(viewer) -> list:
    """Case 2: the inference dock on the brain volume (open in ``viewer``),
    then napari's own ``add_labels`` of the same array."""
    results = []
    infer = InferenceWidget(viewer)
    viewer.window.add_dock_widget(infer)
    infer.set_checkpoint(builtin_checkpoints()['demo-brain'])
    infer.set_image_layer(viewer.layers[0])
    spin(lambda: 'parameters' in infer.model_info.text(), 60)
    settle()
    result_at = []
    on_result = infer._on_result

    def record_result(value):
        result_at.append(time.perf_counter())
        on_result(value)

    run = infer.run

    def start_inference():
        run()
        infer._worker.returned.disconnect(on_result)
        infer._worker.returned.connect(record_result)

    results += measure(
        'inference, 189-slice volume',
        start_inference,
        lambda: infer._worker is None,
        split=lambda: result_at[0] if result_at else None,
    )

    # napari's own cost of adding the same labels layer, for comparison
    labels = infer.last_result[1].prediction.labels
    result_layer = viewer.layers[-1]
    like_result = dict(name='same', scale=result_layer.scale, units=result_layer.units)
    like_result.update(translate=result_layer.translate)
    added = []
    results += measure(
        '  napari: add_labels(same array)',
        lambda: QTimer.singleShot(
            100, lambda: added.append(viewer.add_labels(labels.copy(), **like_result))
        ),
        lambda: bool(added),
    )
    results[-1]['napari'] = True
    viewer.layers.remove(added[0])
    return results


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', choices=('measure', 'inference'), help='run one case')
    args = parser.parse_args()
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    results = []
    if args.only == 'measure':
        results += measure_objects(viewer)
    elif args.only == 'inference':
        viewer.open_sample('napari-vmunet', 'brain')
        results += measure_inference(viewer)
    if args.only:
        viewer.close()
        report(results)
        return

    # 1. idle, with the brain volume open
    viewer.open_sample('napari-vmunet', 'brain')
    end = time.monotonic() + 5
    results += measure('idle (5 s)', lambda: None, lambda: time.monotonic() > end)

    # 2. inference on the brain volume
    results += measure_inference(viewer)

    # 3. painting labels, without and with training in the background
    viewer.layers.clear()
    viewer.open_sample('napari-vmunet', 'nuclei')
    image, labels = viewer.layers[0], viewer.layers[1]
    rng = np.random.default_rng(0)
    painter = QTimer()
    painter.setInterval(50)
    painter.timeout.connect(
        lambda: labels.paint(tuple(rng.integers(0, 512, 2)), 1, refresh=True)
    )
    painter.start()
    end = time.monotonic() + 10
    results += measure(
        'painting every 50 ms (10 s)', lambda: None, lambda: time.monotonic() > end
    )
    train = TrainingWidget(viewer)
    viewer.window.add_dock_widget(train)
    train.image_layer.set_value(image)
    train.labels_layer.set_value(labels)
    train.set_start_checkpoint(builtin_checkpoints()['demo-nuclei'])
    train.epochs.setValue(3)
    train.output.setText(str(Path(tempfile.mkdtemp()) / 'tuned.safetensors'))
    results += measure(
        'training + painting every 50 ms',
        train.start,
        lambda: train.process is not None and train.process.finished is not None,
    )
    painter.stop()
    viewer.layers.clear()
    results += measure_objects(viewer)
    viewer.close()
    report(results)


def report(results: list) -> None:
    print(
        f'{"case":34} {"seconds":>8} {"ticks":>7} {"median gap ms":>14} '
        f'{"p99 stall ms":>13} {"longest stall ms":>17} {"full GCs (longest ms)":>22}'
    )
    for r in results:
        print(
            f'{r["case"]:34} {r["seconds"]:8.1f} {r["ticks"]:7d} '
            f'{r["median_gap"]:14.1f} {r["p99_stall"]:13.1f} '
            f'{r["longest_stall"]:17.1f} '
            f'{len(r["full_gc"]):>10} ({1000 * max(r["full_gc"], default=0):.0f})'
        )
    working = [r for r in results if not r.get('napari')]
    worst = max(
        r['longest_stall']
        for r in working
        if not r['case'].startswith(('idle', 'painting'))
    )
    print(
        f'\nlongest stall while inference or training runs: {worst:.0f} ms '
        f'(target <= 100 ms): {"PASS" if worst <= 100 else "FAIL"}'
    )


if __name__ == '__main__':
    main()
