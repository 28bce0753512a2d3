"""Compile the triton scan kernels for NVIDIA GPUs without one (ahead of time).

Triton's interpreter, which the CPU tests use, accepts code that a real GPU
compile may reject, and it says nothing about registers.  This compiles the
forward and backward kernels with the tiles the scan picks by default (see
``scan_triton.py``) for sm_80 (A100) and sm_90 (H100/H200) with the ptxas
that ships in the triton wheel, and prints each kernel's registers per
thread and spill stack (``cuobjdump -res-usage``).  No GPU needed.

    python benchmarks/triton_compile.py
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from napari_vmunet.model import scan_triton as T

FLAGS = dict(HAS_D=True, HAS_BIAS=True, SOFTPLUS=True, BLOCK_N=16)


def signature(fn, consts: dict, dtype: str) -> dict:
    """Every pointer ``*fp32`` (the inputs and outputs ``*{dtype}``), every
    other argument ``i32``."""
    low = {'u_ptr', 'dt_ptr', 'B_ptr', 'C_ptr', 'z_ptr', 'out_ptr', 'go_ptr',
           'gu_ptr', 'gdt_ptr', 'gz_ptr'}  # fmt: skip
    sig = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in consts:
            sig[name] = 'constexpr'
        elif name.endswith('_ptr'):
            sig[name] = f'*{dtype}' if name in low else '*fp32'
        else:
            sig[name] = 'i32'
    return sig


def usage(kernel) -> str:
    tool = os.path.join(
        os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'
    )
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(kernel.asm['cubin'])
        f.flush()
        out = subprocess.run(
            [tool, '-res-usage', f.name], capture_output=True, text=True
        )
    for line in out.stdout.splitlines():
        if 'REG:' in line:
            return ' '.join(line.split()[:2])
    return 'usage unknown'


def main() -> int:
    bl = T.FWD_BLOCK_L
    # (name, kernel, constexprs, warps): the default tiles, and the narrowed
    # channel block the forward takes for one image at stage 1
    cases = []
    for bd in (T.FWD_BLOCK_D, 4):
        for z in (False, True):
            consts = dict(FLAGS, HAS_Z=z, SAVE_STATES=True, BLOCK_L=bl, BLOCK_D=bd)
            warps = T._fwd_warps(bl, bd, 16)
            cases.append((f'forward  D{bd:<2} z={z!s:5}', T._fwd_kernel, consts, warps))
    for z in (False, True):
        consts = dict(FLAGS, HAS_Z=z, BLOCK_L=bl, BLOCK_D=T.BWD_BLOCK_D)
        cases.append(
            (
                f'backward D{T.BWD_BLOCK_D:<2} z={z!s:5}',
                T._bwd_kernel,
                consts,
                T.BWD_WARPS,
            )
        )
    print(f'triton {triton.__version__}, chunk {bl} steps, N = 16')
    for arch in (80, 90):
        for dtype in ('fp32', 'bf16'):
            for name, fn, consts, warps in cases:
                src = ASTSource(
                    fn=fn, signature=signature(fn, consts, dtype), constexprs=consts
                )
                kernel = triton.compile(
                    src,
                    target=GPUTarget('cuda', arch, 32),
                    options=dict(num_warps=warps),
                )
                print(
                    f'sm_{arch} {dtype} {name} {warps} warps: {usage(kernel)}',
                    flush=True,
                )
    return 0


if __name__ == '__main__':
    sys.exit(main())
