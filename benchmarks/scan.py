"""Selective scan: our fast CPU backends vs mamba-ssm's reference loop.

Side by side in one process, single thread, batch 1, on the four SS2D scan
shapes of VM-UNet at 256x256 (D = 4 directions x 2C channels, L = H*W).
Each round runs every implementation once per stage in rotating order; the
table gives median times and the median of the per-round paired ratios
(these machines are noisy; only same-process paired ratios are stable).

Two backends, each by two entry points:

* ``torch`` -- the pure-PyTorch blocked scan, ``selective_scan(...)`` on
  mamba-ssm's ``(batch, D, L)`` layout, including the transposes to and
  from it;
* ``torch-tm`` -- the same on the time-major layout that SS2D feeds it
  (what the model actually runs);
* ``numba``, ``numba-tm`` -- the fused numba kernels (the default on CPUs),
  the same two ways.

Peak memory above the inputs is measured in a fresh subprocess per case
(``ru_maxrss``): the reference materialises ``(batch, D, L, N)`` tensors,
the blocked scan only ``block x slab`` buffers.

    python benchmarks/scan.py [--rounds 5] [--threads 1] [--clock cpu]

``--clock cpu`` times this process's CPU time instead of wall time: on a
shared machine it leaves out the time other jobs held the core.

Targets (issue #18, for AVX2 machines as well): >= 25x the reference summed
over the stages, no stage below 12x (issue #2 asked 20x / 10x).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys

import torch

from _common import CLOCKS, machine_line, peak_rss_mib
from napari_vmunet.model.scan import selective_scan, selective_scan_reference

STAGES = [
    ('stage 1', 96, 4096),
    ('stage 2', 192, 1024),
    ('stage 3', 384, 256),
    ('stage 4', 768, 64),
]
K, N = 4, 16


def make_inputs(width: int, length: int, seed: int = 0) -> dict:
    """SS2D-like inputs: D = 4 * 2 * width channels, Mamba dt init."""
    g = torch.Generator().manual_seed(seed)
    dim = K * 2 * width
    dt0 = torch.exp(
        torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    )
    return dict(
        u=torch.randn(1, dim, length, generator=g),
        delta=0.5 * torch.randn(1, dim, length, generator=g),
        A=-torch.arange(1, N + 1, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(1, K, N, length, generator=g),
        C=torch.randn(1, K, N, length, generator=g),
        D=torch.ones(dim),
        delta_bias=dt0 + torch.log(-torch.expm1(-dt0)),
    )


def time_major(inputs: dict) -> dict:
    out = dict(inputs)
    for key in ('u', 'delta', 'B', 'C'):
        out[key] = inputs[key].movedim(-1, 0).contiguous()
    return out


IMPLS = {
    'reference': lambda x: selective_scan_reference(**x, delta_softplus=True),
    'torch': lambda x: selective_scan(**x, delta_softplus=True, backend='torch'),
    'torch-tm': lambda x: selective_scan(
        **x, delta_softplus=True, backend='torch', time_major=True
    ),
    'numba': lambda x: selective_scan(**x, delta_softplus=True, backend='numba'),
    'numba-tm': lambda x: selective_scan(
        **x, delta_softplus=True, backend='numba', time_major=True
    ),
}
FAST = [name for name in IMPLS if name != 'reference']


def run_case(impl: str, width: int, length: int) -> None:
    """Subprocess body: one call, print the peak RSS growth in MiB."""
    torch.set_num_threads(1)
    inputs = make_inputs(width, length)
    if impl.endswith('-tm'):
        inputs = time_major(inputs)
    before = peak_rss_mib()
    with torch.no_grad():
        IMPLS[impl](inputs)
    print(json.dumps({'peak_mib': peak_rss_mib() - before}))


def peak_memory(impl: str, width: int, length: int) -> float:
    out = subprocess.run(
        [sys.executable, __file__, '--case', impl, str(width), str(length)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])['peak_mib']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--no-memory', action='store_true')
    parser.add_argument('--clock', choices=list(CLOCKS), default='wall')
    parser.add_argument('--case', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args.case[0], int(args.case[1]), int(args.case[2]))
        return
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    print(machine_line())
    print(
        f'{args.threads} thread(s), {args.rounds} rounds, batch 1, {args.clock} time\n'
    )
    names = list(IMPLS)
    times = {(s, n): [] for s, *_ in STAGES for n in names}
    data = {}
    for stage, width, length in STAGES:
        plain = make_inputs(width, length)
        tm = time_major(plain)
        data[stage] = {n: tm if n.endswith('-tm') else plain for n in names}
        with torch.no_grad():  # warm-up
            for n in names:
                IMPLS[n](data[stage][n])
    with torch.no_grad():
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for stage, *_ in STAGES:
                for n in order:
                    t = clock()
                    IMPLS[n](data[stage][n])
                    times[(stage, n)].append(clock() - t)

    def ratio(stage_list, n):
        per_round = [
            sum(times[(s, 'reference')][r] for s in stage_list)
            / sum(times[(s, n)][r] for s in stage_list)
            for r in range(args.rounds)
        ]
        return statistics.median(per_round)

    header = (
        f'{"stage":9} {"D":>5} {"L":>5} | '
        + ' | '.join(f'{n:>9} ms' for n in names)
        + ' | '
        + ' | '.join(f'{n:>9} x' for n in FAST)
    )
    print(header)
    print('-' * len(header))
    for stage, width, length in STAGES:
        cells = ' | '.join(
            f'{1e3 * statistics.median(times[(stage, n)]):12.1f}' for n in names
        )
        ratios = ' | '.join(f'{ratio([stage], n):11.1f}' for n in FAST)
        print(f'{stage:9} {8 * width:5d} {length:5d} | {cells} | {ratios}')
    all_stages = [s for s, *_ in STAGES]
    total = ' | '.join(
        f'{1e3 * sum(statistics.median(times[(s, n)]) for s in all_stages):12.1f}'
        for n in names
    )
    summed = {n: ratio(all_stages, n) for n in FAST}
    ratios = ' | '.join(f'{summed[n]:11.1f}' for n in FAST)
    print(f'{"sum":21} | {total} | {ratios}')
    worst = {n: min(ratio([s], n) for s in all_stages) for n in FAST}
    print()
    for n in FAST:
        ok = summed[n] >= 25 and worst[n] >= 12
        print(
            f'{n}: {summed[n]:.1f}x summed (target >= 25x), worst stage '
            f'{worst[n]:.1f}x (target >= 12x): {"PASS" if ok else "FAIL"}'
        )
    if args.no_memory:
        return
    print('\npeak memory above the inputs (MiB, fresh process per case):')
    for stage, width, length in STAGES:
        mem = {n: peak_memory(n, width, length) for n in names}
        print(f'{stage:9} ' + '  '.join(f'{n} {mem[n]:8.1f}' for n in names))


if __name__ == '__main__':
    main()
