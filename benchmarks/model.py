"""VM-UNet forward vs convolutional U-Nets of about the same size.

VM-UNet in the original ISIC configuration (27.4 M parameters) against two
conv U-Nets from MONAI: ``BasicUNet`` with features 64..1024 (31.1 M: the
classic U-Net -- double 3x3 conv blocks at every resolution, max-pool
down, transposed-conv up) and ``UNet`` with channels 64..1024 and two
residual units (26.0 M; strided convolutions, so most of its parameters
work at low resolution and it is much cheaper per pixel), at 256x256, batch 1,
side by side in one process, rotating the order every round.  The table
gives median times and the median of the per-round ratios to the conv
U-Net; the scan share is the time spent inside ``selective_scan``.  With
``--reference`` the same VM-UNet is also timed with mamba-ssm's reference
scan (slow: ~20x).

    python benchmarks/model.py [--rounds 5] [--threads 1] [--reference]

Target (issue #2): VM-UNet <= 1.5x the conv U-Net's time (stretch: faster);
the verdict is given against both.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from monai.networks.nets import BasicUNet, UNet

import napari_vmunet.model.vmunet as vmunet_module
from napari_vmunet.model import VMUNet

SCAN_SECONDS = [0.0]


def _timed_scan(original):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SCAN_SECONDS[0] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument(
        '--reference',
        action='store_true',
        help='also time VM-UNet with the reference scan',
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    vmunet_module.selective_scan = _timed_scan(vmunet_module.selective_scan)

    models = {
        'VM-UNet (fast scan)': VMUNet().eval(),
        'MONAI UNet 64-1024 res2': UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            channels=(64, 128, 256, 512, 1024),
            strides=(2, 2, 2, 2),
            num_res_units=2,
        ).eval(),
        'U-Net 64-1024 (classic)': BasicUNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=1,
            features=(64, 128, 256, 512, 1024, 64),
        ).eval(),
    }
    if args.reference:
        ref = VMUNet().eval()
        ref.load_state_dict(models['VM-UNet (fast scan)'].state_dict())
        ref.set_scan_backend('reference')
        models['VM-UNet (reference scan)'] = ref
    x = torch.rand(1, 3, args.size, args.size) * 255
    names = list(models)
    times = {n: [] for n in names}
    scan = {n: [] for n in names}
    with torch.inference_mode():
        for n in names:  # warm-up
            models[n](x)
        for r in range(args.rounds):
            for n in names[r % len(names) :] + names[: r % len(names)]:
                SCAN_SECONDS[0] = 0.0
                start = time.perf_counter()
                models[n](x)
                times[n].append(time.perf_counter() - start)
                scan[n].append(SCAN_SECONDS[0])
    base = 'MONAI UNet 64-1024 res2'
    print(
        f'torch {torch.__version__}, {args.threads} thread(s), {args.rounds} '
        f'rounds, input 1x3x{args.size}x{args.size}\n'
    )
    print(
        f'{"model":26} {"params":>8} {"forward ms":>11} {"scan share":>10} '
        f'{"x classic":>11}'
    )
    for n in names:
        params = sum(p.numel() for p in models[n].parameters()) / 1e6
        ratio = statistics.median(
            t / b
            for t, b in zip(times[n], times['U-Net 64-1024 (classic)'], strict=True)
        )
        share = statistics.median(s / t for s, t in zip(scan[n], times[n], strict=True))
        share_txt = f'{100 * share:9.0f}%' if share else f'{"-":>10}'
        print(
            f'{n:26} {params:7.2f}M {1e3 * statistics.median(times[n]):11.0f} '
            f'{share_txt} {ratio:11.2f}'
        )
    print()
    for other in ('U-Net 64-1024 (classic)', base):
        ratio = statistics.median(
            t / b for t, b in zip(times[names[0]], times[other], strict=True)
        )
        verdict = 'PASS' if ratio <= 1.5 else 'FAIL'
        print(f'VM-UNet / {other} = {ratio:.2f} (target <= 1.5): {verdict}')


if __name__ == '__main__':
    main()
