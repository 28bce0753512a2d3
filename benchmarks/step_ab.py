"""The fine-tuning step and its scans: this tree's model code against a git
revision's, side by side in one process (issue #18).

Speed-ups of a few per cent vanish in the drift of a shared machine between
two runs, so both versions run interleaved round by round: the revision's
``napari_vmunet/model`` package is extracted with ``git archive`` and
imported under another name, and the same VM-UNet switches its modules'
classes between the two each round.  Printed: seconds per step (forward,
BCE + Dice, backward, AdamW through :meth:`Trainer.train_step`) of the dock's
small VM-UNet (24..192) at 256x256, batch 4, for both versions and the
same-size MONAI ``UNet`` of ``training.py --step-ratio``, the medians of the
per-round ratios, and with ``--scan`` the scan alone (forward + backward) at
that model's four stage shapes, weighted by how often a step runs each.
``--no-scan`` replaces the scan's core (``BlockedSelectiveScan``) in both
versions by a stand-in that costs next to nothing, to time the rest of the
step on its own.  ``--forward`` times inference instead of the step (issue
#16, item 6): the built-in demo-brain model's forward on a batch of two
256x224 windows (a brain slice in one window), in inference mode.

    python benchmarks/step_ab.py --against main --rounds 5 --clock cpu [--scan]
                                 [--no-scan] [--forward]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

from _common import CLOCKS, machine_line
from training import DOCK_SMALL, SAME_SIZE_UNET, SigmoidUNet, make_trainer

REPO = Path(__file__).resolve().parents[1]
#: (L, inner width Di, scans per step) of the dock small model at 256^2
STAGES = [(4096, 48, 3), (1024, 96, 4), (256, 192, 4), (64, 384, 4)]


def import_revision(rev: str, where: Path):
    """``napari_vmunet.model`` as of ``rev``, imported as ``model_at_rev``."""
    tar = subprocess.run(
        ['git', '-C', str(REPO), 'archive', rev, 'src/napari_vmunet/model'],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(tar)) as archive:
        archive.extractall(where, filter='data')
    (where / 'src/napari_vmunet/model').rename(where / 'model_at_rev')
    sys.path.insert(0, str(where))
    return importlib.import_module('model_at_rev.vmunet')


class NoScan(torch.autograd.Function):
    """Stand-in for ``BlockedSelectiveScan``: right shapes, no work."""

    @staticmethod
    def forward(ctx, u, d, A, B, C, block, slab):
        ctx.save_for_backward(A, B, C)
        return torch.zeros_like(u)

    @staticmethod
    def backward(ctx, gy):
        A, B, C = ctx.saved_tensors
        zeros = [torch.zeros_like(t) for t in (A, B, C)]
        return gy, gy, *zeros, None, None


def without_scan(*packages: str) -> None:
    """``NoScan`` where each model package's torch scan looks its core up:
    ``scan_torch`` (``scan`` before the split of issue #15)."""
    for package in packages:
        importlib.import_module(f'{package}.scan')  # and scan_torch, where it is
        for name in ('scan', 'scan_torch'):
            module = sys.modules.get(f'{package}.{name}')
            if module is not None:
                module.BlockedSelectiveScan = NoScan


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def step_rounds(old_vmunet, rounds: int, clock) -> None:
    from napari_vmunet.io import load_sample
    from napari_vmunet.model import vmunet as new_vmunet
    from napari_vmunet.training import TrainingPair

    image, labels = load_sample('nuclei')
    top = TrainingPair(image.data[:256], labels[:256], name='nuclei top')

    def setup(network):
        torch.manual_seed(0)
        trainer = make_trainer(network, [top], 'cpu', tile_size=256, batch_size=4)
        batch = [trainer.dataset[i] for i in range(4)]
        x = torch.stack([b[0] for b in batch])
        return trainer, x, torch.stack([b[1] for b in batch])

    vm = setup(list(DOCK_SMALL))
    ours = [
        m for m in vm[0].model.modules() if type(m).__module__ == new_vmunet.__name__
    ]

    def use(version) -> None:
        for m in ours:
            m.__class__ = getattr(version, type(m).__name__)

    runs = {
        'revision': (vm, old_vmunet),
        'this tree': (vm, new_vmunet),
        'MONAI UNet': (setup(SigmoidUNet(SAME_SIZE_UNET)), None),
    }
    for (trainer, x, y), version in runs.values():  # warm-up
        if version is not None:
            use(version)
        trainer.train_step(x, y, 1)
    names = list(runs)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % 3 :] + names[: r % 3]:
            (trainer, x, y), version = runs[n]
            if version is not None:
                use(version)
            start = clock()
            trainer.train_step(x, y, 1)
            times[n].append(clock() - start)
    use(new_vmunet)
    for n in names:
        spread = ' '.join(f'{t:.2f}' for t in times[n])
        print(f'{n:<12} {statistics.median(times[n]):7.3f} s/step  ({spread})')
    old, new, unet = (times[n] for n in names)
    print(
        f'VM-UNet / UNet: revision {ratio(old, unet):.2f}x, this tree '
        f'{ratio(new, unet):.2f}x; step revision / this tree {ratio(old, new):.3f}x'
    )


def forward_rounds(old_vmunet, rounds: int, clock) -> None:
    """demo-brain's forward in inference mode, by both versions in turn."""
    from napari_vmunet.checkpoint import load_checkpoint
    from napari_vmunet.model import vmunet as new_vmunet

    model = load_checkpoint('demo-brain').model.eval()
    ours = [m for m in model.modules() if type(m).__module__ == new_vmunet.__name__]
    versions = {'revision': old_vmunet, 'this tree': new_vmunet}
    x = torch.randn(2, model.input_channels, 256, 224)
    times = {name: [] for name in versions}
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up
            for name in list(versions)[:: 1 if r % 2 else -1]:
                for m in ours:
                    m.__class__ = getattr(versions[name], type(m).__name__)
                start = clock()
                model(x)
                if r:
                    times[name].append(clock() - start)
    for m in ours:
        m.__class__ = getattr(new_vmunet, type(m).__name__)
    for name, t in times.items():
        spread = ' '.join(f'{1e3 * v:.0f}' for v in t)
        print(f'{name:<10} {1e3 * statistics.median(t):7.1f} ms  ({spread})')
    print(
        f'forward revision / this tree '
        f'{ratio(times["revision"], times["this tree"]):.3f}x'
    )


def scan_rounds(old_vmunet, rounds: int, clock) -> None:
    from napari_vmunet.model import scan as new_scan

    old_scan = importlib.import_module(old_vmunet.__name__.rsplit('.', 1)[0] + '.scan')
    g = torch.Generator().manual_seed(0)
    totals = {'revision': [0.0] * rounds, 'this tree': [0.0] * rounds}
    print(f'{"L":>5} {"Di":>4} {"revision ms":>12} {"this tree ms":>13} {"ratio":>6}')
    for length, di, count in STAGES:
        dim, batch, k, n = 4 * di, 4, 4, 16
        x = dict(
            u=torch.randn(length, batch, dim, generator=g),
            delta=0.5 * torch.randn(length, batch, dim, generator=g) - 3,
            A=-torch.rand(dim, n, generator=g) * 8 - 0.5,
            B=torch.randn(length, batch, k, n, generator=g),
            C=torch.randn(length, batch, k, n, generator=g),
            D=torch.ones(dim),
            delta_bias=torch.zeros(dim),
        )
        x = {key: v.requires_grad_() for key, v in x.items()}
        gy = torch.randn(length, batch, dim, generator=g)
        times = {'revision': [], 'this tree': []}
        versions = {'revision': old_scan, 'this tree': new_scan}
        for r in range(rounds + 1):  # round 0 warms up
            order = list(versions) if r % 2 else list(versions)[::-1]
            for name in order:
                start = clock()
                y = versions[name].selective_scan(
                    **x, delta_softplus=True, backend='torch', time_major=True
                )
                y.backward(gy)
                if r:
                    times[name].append(clock() - start)
                    totals[name][r - 1] += count * times[name][-1]
        print(
            f'{length:>5} {di:>4} {1e3 * statistics.median(times["revision"]):>12.1f} '
            f'{1e3 * statistics.median(times["this tree"]):>13.1f} '
            f'{ratio(times["revision"], times["this tree"]):>6.3f}'
        )
    print(
        f'scans of one step: revision {statistics.median(totals["revision"]):.3f} s, '
        f'this tree {statistics.median(totals["this tree"]):.3f} s, '
        f'ratio {ratio(totals["revision"], totals["this tree"]):.3f}x'
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--against', default='main', help='git revision')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--clock', choices=list(CLOCKS), default='cpu')
    parser.add_argument('--scan', action='store_true', help='the scans alone too')
    parser.add_argument(
        '--no-scan', action='store_true', help='the step without the scan core'
    )
    parser.add_argument(
        '--forward', action='store_true', help="demo-brain's forward, not the step"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())
    print(f'{torch.get_num_threads()} thread(s), {args.clock} time, vs {args.against}')
    with tempfile.TemporaryDirectory() as tmp:
        old = import_revision(args.against, Path(tmp))
        if args.forward:
            forward_rounds(old, args.rounds, CLOCKS[args.clock])
            return
        if args.scan:
            scan_rounds(old, args.rounds, CLOCKS[args.clock])
        if args.no_scan:
            without_scan('napari_vmunet.model', old.__name__.rsplit('.', 1)[0])
            print('scan core replaced by a stand-in in both versions')
        step_rounds(old, args.rounds, CLOCKS[args.clock])


if __name__ == '__main__':
    main()
