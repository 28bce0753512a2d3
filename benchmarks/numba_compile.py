"""What the numba scan costs before its first result: compiling, and loading
from numba's disk cache (issue #18).

Each case runs in a fresh process with its own ``NUMBA_CACHE_DIR``: ``cold``
starts from an empty cache (a new installation), ``warm`` from the cache
that ``cold`` left (every later session).  Printed: seconds from importing
the scan module to the first forward result, and then to the first
backward result, on a tiny scan.

    python benchmarks/numba_compile.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from _common import machine_line

CASE = """
import json, time, torch
start = time.perf_counter()
from napari_vmunet.model.scan import selective_scan
g = torch.Generator().manual_seed(0)
def rand(*shape):
    return torch.randn(*shape, generator=g)
x = dict(u=rand(1, 64, 37), delta=rand(1, 64, 37), A=-rand(64, 16).abs() - 0.5,
         B=rand(1, 4, 16, 37), C=rand(1, 4, 16, 37), delta_bias=rand(64))
with torch.no_grad():
    selective_scan(**x, delta_softplus=True, backend='numba')
forward = time.perf_counter()
leaves = {k: v.requires_grad_() for k, v in x.items()}
selective_scan(**leaves, delta_softplus=True, backend='numba').sum().backward()
backward = time.perf_counter() - forward
print(json.dumps({'forward': forward - start, 'backward': backward}))
"""


def run(cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    out = subprocess.run(
        [sys.executable, '-c', CASE],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rounds', type=int, default=2)
    args = parser.parse_args()
    print(machine_line())
    times = {'cold': [], 'warm': []}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            times['cold'].append(run(cache))
            times['warm'].append(run(cache))
    print(f'{"cache":6} {"first forward s":>16} {"first backward s":>17}')
    for name, rows in times.items():
        fwd = statistics.median(r['forward'] for r in rows)
        bwd = statistics.median(r['backward'] for r in rows)
        print(f'{name:6} {fwd:16.2f} {bwd:17.2f}')


if __name__ == '__main__':
    main()
