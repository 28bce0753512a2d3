"""Objects and measurements: accuracy on the bundled samples, cost on a big volume.

1. nuclei: the demo-nuclei model's prediction on the sample's held-out rows
   (320-511; the model trained on rows 0-319), split into objects without
   and with the split of touching objects, matched against the sample's
   human instance labels: precision, recall, F1 at IoU >= 0.5 and the mean
   IoU of the matched pairs.  The whole image too, for comparison with the
   0.71 of plain connected components quoted in the issue.
2. brain: grey- and white-matter volumes in mL from the demo-brain model's
   prediction next to those of the reference tissue map.
3. volume: objects (with the split) plus measurements on a synthetic
   200x512x512 volume of a few thousand touching balls at 2x1x1 µm:
   time, peak memory above the inputs, and the longest time a second
   Python thread waited for the GIL (what a GUI thread would feel; the
   viewer itself is measured by benchmarks/responsiveness.py --only measure).

    OMP_NUM_THREADS=1 python benchmarks/measure.py [--skip-brain]
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from napari_vmunet.cli.demo import NUCLEI_TRAIN_ROWS
from napari_vmunet.io import load_sample
from napari_vmunet.measure import (
    Geometry,
    find_objects,
    match_objects,
    measure,
)

try:
    from _common import current_rss_mib, peak_rss_mib, reset_peak_rss
except ImportError:  # run from the repository root
    from benchmarks._common import current_rss_mib, peak_rss_mib, reset_peak_rss


def predict(sample: str, model: str):
    from napari_vmunet.inference import Predictor
    from napari_vmunet.zoo import builtin_checkpoints

    image, reference = load_sample(sample)
    predictor = Predictor(builtin_checkpoints()[model], device='cpu')
    t0 = time.perf_counter()
    result = predictor.predict(image.data)
    return image, reference, result, time.perf_counter() - t0


def nuclei() -> None:
    image, reference, result, seconds = predict('nuclei', 'demo-nuclei')
    print(f'\n## nuclei (demo-nuclei prediction, {seconds:.1f} s)\n')
    print(
        '| rows | objects | predicted | reference | precision | recall | F1 '
        '| mean IoU |'
    )
    print('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |')
    parts = {
        f'held out {NUCLEI_TRAIN_ROWS}-511': slice(NUCLEI_TRAIN_ROWS, None),
        'whole image': slice(None),
    }
    for where, rows in parts.items():
        for how, split in (('connected components', False), ('with split', True)):
            objects = find_objects(result.labels[rows], split_touching=split)
            m = match_objects(objects.labels, reference[rows])
            print(
                f'| {where} | {how} | {m.predicted} | {m.reference} | '
                f'{m.precision:.3f} | {m.recall:.3f} | **{m.f1:.3f}** | '
                f'{m.mean_iou:.3f} |'
            )


def brain() -> None:
    image, reference, result, seconds = predict('brain', 'demo-brain')
    geometry = Geometry.from_image(image)
    names = ['background', 'grey matter', 'white matter']
    predicted = measure(result.labels, geometry=geometry, class_names=names)
    truth = measure(reference, geometry=geometry, class_names=names)
    print(f'\n## brain (demo-brain prediction, {seconds:.1f} s)\n')
    print('| class | predicted mL | reference mL | difference |')
    print('| --- | ---: | ---: | ---: |')
    for name, p, r in zip(
        predicted['class'], predicted['volume_mL'], truth['volume_mL'], strict=True
    ):
        print(f'| {name} | {p:.1f} | {r:.1f} | {100 * (p - r) / r:+.1f} % |')


def balls(shape=(200, 512, 512), n=4000, spacing=(2.0, 1.0, 1.0), seed=0):
    """``n`` balls of radius 3-6 µm at random places: many touch."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, np.uint8)
    centres = [rng.uniform(0, s, n) for s in shape]
    radii = rng.uniform(3, 6, n)
    for z, y, x, r in zip(*centres, radii, strict=True):
        box = tuple(
            slice(max(int(c - r / sp) - 1, 0), min(int(c + r / sp) + 2, s))
            for c, sp, s in zip((z, y, x), spacing, shape, strict=True)
        )
        grid = np.ogrid[box]
        d2 = sum(
            ((g - c) * sp) ** 2
            for g, c, sp in zip(grid, (z, y, x), spacing, strict=True)
        )
        volume[box][d2 <= r * r] = 1
    return volume


class GilWatch:
    """A thread that sleeps 5 ms at a time and records how late it wakes."""

    def __init__(self):
        self.gaps: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.005)
            now = time.perf_counter()
            self.gaps.append(now - last - 0.005)
            last = now

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def big_volume() -> None:
    spacing = (2.0, 1.0, 1.0)
    labels = balls(spacing=spacing)
    intensity = np.random.default_rng(1).random(labels.shape, dtype=np.float32)
    geometry = Geometry.from_scale(spacing, unit='um')
    print('\n## 200x512x512 volume, objects with split + measurements\n')
    print('| step | seconds | peak MiB above inputs | longest GIL wait ms | objects |')
    print('| --- | ---: | ---: | ---: | ---: |')
    for split in (False, True):
        base = current_rss_mib()
        reset_peak_rss()
        with GilWatch() as watch:
            t0 = time.perf_counter()
            objects = find_objects(labels, geometry=geometry, split_touching=split)
            t1 = time.perf_counter()
            table = measure(objects, intensity, geometry=geometry)
            t2 = time.perf_counter()
        peak = peak_rss_mib() - base
        wait = 1000 * max(watch.gaps)
        how = 'with split' if split else 'connected components'
        print(
            f'| objects ({how}) + measurements | {t2 - t0:.1f} '
            f'(objects {t1 - t0:.1f}, table {t2 - t1:.1f}) | {peak:.0f} | '
            f'{wait:.0f} | {table.n_rows} |'
        )
        del objects, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--skip-brain', action='store_true')
    parser.add_argument('--skip-volume', action='store_true')
    args = parser.parse_args()
    nuclei()
    if not args.skip_brain:
        brain()
    if not args.skip_volume:
        big_volume()


if __name__ == '__main__':
    main()
