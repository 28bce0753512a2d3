"""One short GPU check (run once when a GPU machine is lent; ~1-2 min).

1. our pure-PyTorch scan on CUDA against the reference (run on CUDA in
   float64) on the four VM-UNet stage shapes, with the CPU-tuned block/slab
   and with GPU-sized ones (one chunk, longer blocks);
2. VM-UNet forward at 256^2 in fp32 and under bf16 autocast: agreement and
   images/s (batch 1 and 16), with each scan setting; mamba-ssm if present.

    python benchmarks/gpu_check.py
"""

from __future__ import annotations

import math
import time

import torch

from napari_vmunet.model import VMUNet, mamba_available
from napari_vmunet.model import scan as S

STAGES = [(96, 4096), (192, 1024), (384, 256), (768, 64)]
SETTINGS = {
    'cpu-tuned (block 8, slab 12K)': (8, 12288),
    'gpu-sized (block 64, one chunk)': (64, 2**40),
}


def inputs(width, length, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = 8 * width
    dt0 = torch.exp(
        torch.rand(dim, generator=g) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3)
    )
    x = dict(
        u=torch.randn(1, dim, length, generator=g),
        delta=0.5 * torch.randn(1, dim, length, generator=g),
        A=-torch.arange(1, 17, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(1, 4, 16, length, generator=g),
        C=torch.randn(1, 4, 16, length, generator=g),
        D=torch.ones(dim),
        delta_bias=dt0 + torch.log(-torch.expm1(-dt0)),
    )
    return {k: v.to(device) for k, v in x.items()}


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def main():
    dev = torch.device('cuda')
    print(
        torch.__version__,
        torch.cuda.get_device_name(dev),
        'mamba-ssm:',
        mamba_available(),
    )
    print('\n== scan on CUDA vs reference (float64 on CUDA)')
    for width, length in STAGES:
        x = inputs(width, length, dev)
        with torch.no_grad():
            ref = S.selective_scan_reference(
                **{k: v.double() for k, v in x.items()}, delta_softplus=True
            )
            t_ref = timed(
                lambda x=x: S.selective_scan_reference(**x, delta_softplus=True), 1
            )
            for name, (block, slab) in SETTINGS.items():
                out = S.selective_scan(
                    **x, delta_softplus=True, backend='torch', block=block, slab=slab
                )
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                t = timed(
                    lambda b=block, s=slab, x=x: S.selective_scan(
                        **x, delta_softplus=True, backend='torch', block=b, slab=s
                    )
                )
                print(
                    f'D={8 * width:5d} L={length:5d} {name:32s} err {err:.1e} '
                    f'{1e3 * t:8.1f} ms (reference fp32 {1e3 * t_ref:8.1f} ms)'
                )
    print('\n== VM-UNet forward at 256x256')
    torch.manual_seed(0)
    model = VMUNet().to(dev).eval()
    for name, (block, slab) in SETTINGS.items():
        S.GPU_BLOCK, S.GPU_SLAB = block, slab
        for batch in (1, 16):
            x = torch.rand(batch, 3, 256, 256, device=dev) * 255
            with torch.inference_mode():
                fp32 = model(x)
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    bf16 = model(x)
                t32 = timed(lambda x=x: model(x), 2)

                def run_bf16(x=x):
                    with torch.autocast('cuda', dtype=torch.bfloat16):
                        model(x)

                t16 = timed(run_bf16, 2)
            diff = (bf16.float() - fp32).abs().max().item()
            print(
                f'{name:32s} batch {batch:2d}: fp32 {batch / t32:7.1f} img/s, '
                f'bf16 {batch / t16:7.1f} img/s, max |p_bf16 - p_fp32| {diff:.3f}'
            )


if __name__ == '__main__':
    main()
