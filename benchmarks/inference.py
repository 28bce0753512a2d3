"""Inference time and memory vs image size: tiled, and whole-image forward.

For 256^2, 512^2, 1024^2 and 2048^2 images the Predictor is timed with
Gaussian-blended 256^2 tiles (overlap 0.25, the default, and overlap 0) and
with one whole-image window (``tile_size=0``) where it fits, side by side in
one process (rotating order each round).  Cost is reported relative to
256^2: it must grow linearly with the area (1024^2 <= 17x 256^2; 16x is the
area ratio).  With overlapping tiles the count of tiles, not the area, sets
the cost: a 1024^2 image needs 5x5 tiles at overlap 0.25 (25x one tile),
4x4 without overlap.

``--volume`` predicts a 200x512x512 uint16 volume slice by slice and reports
the peak resident memory above the process baseline against the size of
input + output: the predictor must hold only a few slices' worth of tensors
on top of them.

    python benchmarks/inference.py [--model full|small] [--rounds 3] [--threads 1]
    python benchmarks/inference.py --volume [--model small]

``--profile`` explains the whole-image numbers: self time per PyTorch
operation for one forward at 256^2 and at 1024^2, and how much each grew
(16x would be linear).  ``--dice`` shows what the tiling choices cost in
accuracy: the built-in demo-nuclei model on the rows of the nuclei sample it
was not trained on, with overlap 0.25, overlap 0 and one whole-image window.

    python benchmarks/inference.py --profile [--model full]
    python benchmarks/inference.py --dice

``--brain`` is the newcomer's volume (issue #16, item 6): the built-in
demo-brain model on the brain sample, predicted through windows of its
training tile (128², what the Predictor did before) and through the
automatic window (one window per 233x197 slice), alternating in each round,
on every ``--every``-th slice.  It prints the seconds, the windows, the time
ratio and the Dice of each against the reference labels.

    python benchmarks/inference.py --brain [--every 4] [--rounds 2] [--threads 1]

``--brain-before SRC`` times the same volume with the Predictor's defaults
of two source trees side by side: ``SRC`` (an older checkout's ``src``, for
example the code of the day issue #16 was filed) and this checkout's, each
in a fresh process, alternating each round.  It prints the wall and CPU
seconds of ``predict`` alone (imports and model loading are not counted)
and the Dice of both.

    git worktree add --detach ../old 0c83a98
    python benchmarks/inference.py --brain-before ../old/src [--every 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from _common import current_rss_mib, peak_rss_mib, reset_peak_rss
from napari_vmunet.inference import Predictor
from napari_vmunet.model import VMUNet

SIZES = (256, 512, 1024, 2048)
MODES = {
    'tiles, overlap 0.25': (256, 0.25),
    'tiles, overlap 0': (256, 0.0),
    'whole image': (0, 0.0),
}


def checkpoint(kind: str):
    torch.manual_seed(0)
    model = (
        VMUNet(num_classes=1)
        if kind == 'full'
        else VMUNet(num_classes=1, dims=(24, 48, 96, 192))
    )
    meta = {'input': {'tile_size': [256, 256]}}
    return types.SimpleNamespace(model=model.eval(), metadata=meta)


def sizes_table(ckpt, rounds: int, max_whole: int) -> None:
    rng = np.random.default_rng(0)
    images = {s: rng.random((s, s), dtype=np.float32) for s in SIZES}
    preds = {
        m: Predictor(ckpt, device='cpu', tile_size=t, overlap=o, batch_size=1)
        for m, (t, o) in MODES.items()
    }
    jobs = [
        (m, s)
        for s in SIZES
        for m in MODES
        if not (m == 'whole image' and s > max_whole)
    ]
    times = {j: [] for j in jobs}
    tiles = {}
    for pred in preds.values():  # warm-up
        pred.predict(images[256])
    for r in range(rounds):
        for m, s in jobs[r % len(jobs) :] + jobs[: r % len(jobs)]:
            steps = []
            t0 = time.perf_counter()
            preds[m].predict(images[s], progress=steps.append)
            times[(m, s)].append(time.perf_counter() - t0)
            tiles[(m, s)] = steps[-1].total
    print(
        f'{"mode":20} {"size":>6} {"tiles":>6} {"seconds":>9} {"x 256^2":>8} '
        f'{"x area":>7}'
    )
    for m in MODES:
        base = statistics.median(times[(m, 256)])
        for s in SIZES:
            if (m, s) not in times:
                print(f'{m:20} {s:5d}^2 {"":>6} {"(skipped: --max-whole)":>9}')
                continue
            t = statistics.median(times[(m, s)])
            print(
                f'{m:20} {s:5d}^2 {tiles[(m, s)]:6d} {t:9.2f} {t / base:8.1f} '
                f'{(t / base) / (s / 256) ** 2:7.2f}'
            )
    print()
    for m in MODES:
        if (m, 1024) in times:
            ratio = statistics.median(times[(m, 1024)]) / statistics.median(
                times[(m, 256)]
            )
            verdict = 'PASS' if ratio <= 17 else 'FAIL'
            print(f'{m}: 1024^2 = {ratio:.1f}x 256^2 (target <= 17x): {verdict}')


def volume_memory(ckpt, depth: int = 200, size: int = 512) -> None:
    rng = np.random.default_rng(1)
    pred = Predictor(ckpt, device='cpu', batch_size=2, threads=torch.get_num_threads())
    # warm-up on two slices: lazy imports, the allocator and oneDNN's buffers
    # are a one-off cost of the process, not of the volume's size
    warm = pred.predict(rng.integers(0, 4000, (2, size, size), dtype=np.uint16))
    warm_peak = peak_rss_mib() - current_rss_mib()
    del warm
    vol = rng.integers(0, 4000, (depth, size, size), dtype=np.uint16)
    input_mib = vol.nbytes / 2**20
    fresh_peak = reset_peak_rss()
    base = current_rss_mib()
    t0 = time.perf_counter()
    result = pred.predict(vol)
    seconds = time.perf_counter() - t0
    output_mib = result.labels.nbytes / 2**20
    extra = peak_rss_mib() - base - output_mib
    slice_f32 = size * size * 4 / 2**20
    print(f'volume {vol.shape} uint16: {seconds:.0f} s ({seconds / depth:.2f} s/slice)')
    print(
        f'input {input_mib:.0f} MiB (already resident), output {output_mib:.0f} MiB; '
        f'peak RSS beyond them during the volume: {extra:.0f} MiB '
        f'(= {extra / slice_f32:.1f} float32 slices of {size}x{size})'
        + ('' if fresh_peak else ' [VmHWM could not be reset: includes warm-up]')
    )
    print(f'(the 2-slice warm-up peaked {warm_peak:.0f} MiB above its end state)')


def profile_scaling(ckpt, top: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile

    self_ms = {}
    for size in (256, 1024):
        x = torch.randn(1, 3, size, size)
        with torch.inference_mode():
            ckpt.model(x)  # warm-up
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                ckpt.model(x)
        self_ms[size] = {
            e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()
        }
    small, large = self_ms[256], self_ms[1024]
    print(f'{"operation":34}{"256^2 ms":>10}{"1024^2 ms":>11}{"growth":>8}')
    for key in sorted(large, key=large.get, reverse=True)[:top]:
        growth = large[key] / small[key] if small.get(key) else float('nan')
        print(f'{key:34}{small.get(key, 0):10.1f}{large[key]:11.1f}{growth:7.1f}x')
    total = sum(large.values()) / sum(small.values())
    print(f'{"all operations":34}{sum(small.values()):10.1f}'
          f'{sum(large.values()):11.1f}{total:7.1f}x')  # fmt: skip


def tiling_dice() -> None:
    from napari_vmunet import load_checkpoint
    from napari_vmunet.io import load_sample
    from napari_vmunet.zoo import builtin_checkpoints

    image, labels = load_sample('nuclei')
    truth = np.asarray(labels)[320:] > 0  # rows the demo model never saw
    ckpt = load_checkpoint(builtin_checkpoints()['demo-nuclei'])
    for name, options in [
        ('tiles, overlap 0.25', dict(overlap=0.25)),
        ('tiles, overlap 0', dict(overlap=0.0)),
        ('whole image', dict(tile_size=0)),
    ]:
        pred = Predictor(ckpt, device='cpu', threads=torch.get_num_threads(), **options)
        found = pred.predict(np.asarray(image.data)).labels[320:] > 0
        dice = 2 * (found & truth).sum() / (found.sum() + truth.sum())
        print(f'{name:20} Dice on rows 320-511: {dice:.4f}')


def tissue_dice(found: np.ndarray, truth: np.ndarray) -> list[float]:
    """Dice of grey matter (1) and white matter (2) against the reference."""
    dices = []
    for c in (1, 2):
        p, t = found == c, truth == c
        dices.append(2 * (p & t).sum() / (p.sum() + t.sum()))
    return dices


def brain_windows(rounds: int, every: int) -> None:
    from napari_vmunet import load_checkpoint
    from napari_vmunet.io import load_sample
    from napari_vmunet.zoo import builtin_checkpoints

    image, labels = load_sample('brain')
    volume = np.asarray(image.data)[::every]
    truth = np.asarray(labels)[::every]
    ckpt = load_checkpoint(builtin_checkpoints()['demo-brain'])
    train_tile = ckpt.metadata['input']['tile_size'][0]
    ways = {
        f'training tile {train_tile}²': dict(tile_size=train_tile),
        'automatic window': dict(tile_size=None),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    results = {}
    for r in range(rounds):
        for name in list(ways)[:: 1 if r % 2 == 0 else -1]:
            pred = Predictor(
                ckpt, device='cpu', threads=torch.get_num_threads(), **ways[name]
            )
            steps = []
            start = time.perf_counter()
            result = pred.predict(volume, progress=steps.append)
            seconds[name].append(time.perf_counter() - start)
            results[name] = (result.labels, steps[-1].total)
    print(f'{volume.shape[0]} slices of {volume.shape[1]}x{volume.shape[2]}')
    print(
        f'{"windows":<22}{"count":>7}{"seconds":>9}{"x before":>10}'
        f'{"Dice GM":>9}{"Dice WM":>9}'
    )
    base = statistics.median(seconds[next(iter(ways))])
    for name in ways:
        found, count = results[name]
        dices = tissue_dice(found, truth)
        med = statistics.median(seconds[name])
        print(
            f'{name:<22}{count:>7}{med:>9.1f}{med / base:>10.2f}'
            f'{dices[0]:>9.4f}{dices[1]:>9.4f}',
            flush=True,
        )


def brain_child(out: str, every: int) -> None:
    """One default prediction of the brain sample, by whichever
    ``napari_vmunet`` is first on the path: labels to ``out``, times to
    stdout as JSON."""
    from napari_vmunet.io import load_sample
    from napari_vmunet.zoo import builtin_checkpoints

    image, _ = load_sample('brain')
    volume = np.asarray(image.data)[::every]
    pred = Predictor(
        builtin_checkpoints()['demo-brain'],
        device='cpu',
        threads=torch.get_num_threads(),
    )
    steps = []
    wall, cpu = time.perf_counter(), time.process_time()
    result = pred.predict(volume, progress=steps.append)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    np.save(out, result.labels)
    print(json.dumps(dict(wall=wall, cpu=cpu, windows=steps[-1].total)))


def brain_against(before_src: str, rounds: int, every: int, threads: int) -> None:
    """The brain volume by an older source tree and by this one, side by
    side in fresh processes (see the module docstring)."""
    from napari_vmunet.io import load_sample

    trees = {
        'before': Path(before_src).resolve(),
        'now': Path(__file__).parents[1] / 'src',
    }
    truth = np.asarray(load_sample('brain')[1])[::every]
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    found, windows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name in list(trees)[:: 1 if r % 2 == 0 else -1]:
                out = str(Path(tmp) / f'{name}.npy')
                env = dict(os.environ, PYTHONPATH=str(trees[name]))
                env.update(OMP_NUM_THREADS=str(threads))
                cmd = [sys.executable, __file__, '--brain-child', out]
                cmd += ['--every', str(every), '--threads', str(threads)]
                line = (
                    subprocess.run(
                        cmd, env=env, check=True, capture_output=True, text=True
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                row = json.loads(line)
                times[name].append((row['wall'], row['cpu']))
                windows[name] = row['windows']
                found[name] = np.load(out)
                print(
                    f'round {r + 1}: {name:7} {row["wall"]:8.1f} s wall '
                    f'{row["cpu"]:8.1f} s CPU',
                    flush=True,
                )
    print(
        f'\n{truth.shape[0]} slices of {truth.shape[1]}x{truth.shape[2]}, '
        f'{threads} thread(s)'
    )
    print(
        f'{"code":<8}{"windows":>8}{"wall s":>9}{"CPU s":>9}{"x wall":>8}'
        f'{"x CPU":>7}{"Dice GM":>9}{"Dice WM":>9}'
    )
    base = [statistics.median(t[i] for t in times['before']) for i in (0, 1)]
    for name in trees:
        wall, cpu = (statistics.median(t[i] for t in times[name]) for i in (0, 1))
        dices = tissue_dice(found[name], truth)
        print(
            f'{name:<8}{windows[name]:>8}{wall:>9.1f}{cpu:>9.1f}'
            f'{wall / base[0]:>8.2f}{cpu / base[1]:>7.2f}'
            f'{dices[0]:>9.4f}{dices[1]:>9.4f}'
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model', choices=('full', 'small'), default='full')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument(
        '--max-whole',
        type=int,
        default=2048,
        help='largest size tried as one whole-image window',
    )
    parser.add_argument('--volume', action='store_true')
    parser.add_argument('--profile', action='store_true')
    parser.add_argument('--dice', action='store_true')
    parser.add_argument('--brain', action='store_true')
    parser.add_argument('--every', type=int, default=4)
    parser.add_argument('--brain-before', metavar='SRC')
    parser.add_argument('--brain-child', metavar='OUT', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.brain_child:
        torch.set_num_threads(args.threads)
        brain_child(args.brain_child, args.every)
        return
    if args.brain_before:
        brain_against(args.brain_before, args.rounds, args.every, args.threads)
        return
    if args.brain:
        torch.set_num_threads(args.threads)
        print(f'torch {torch.__version__}, {args.threads} thread(s), CPU')
        brain_windows(args.rounds, args.every)
        return
    torch.set_num_threads(args.threads)
    ckpt = checkpoint(args.model)
    n = sum(p.numel() for p in ckpt.model.parameters()) / 1e6
    print(
        f'torch {torch.__version__}, {args.threads} thread(s), VM-UNet '
        f'{args.model} ({n:.1f} M parameters), CPU\n'
    )
    if args.volume:
        volume_memory(ckpt)
    elif args.profile:
        profile_scaling(ckpt)
    elif args.dice:
        tiling_dice()
    else:
        sizes_table(ckpt, args.rounds, args.max_whole)


if __name__ == '__main__':
    main()
