"""One GPU check, run once when a GPU machine is lent (a few minutes).

Prints, all measured in the same run:

1. correctness of the triton scan on CUDA: forward on the four VM-UNet stage
   shapes (and a stress input) against the reference run in float64, every
   gradient against the torch backend, bf16 inputs;
2. scan time per stage shape, forward and forward+backward: triton, torch,
   mamba-ssm when present, and the reference; a small sweep of triton tile
   sizes on the stage-1 shape (for tuning ``scan_triton.FWD_*``/``BWD_*``);
3. VM-UNet 256x256 forward images/s at batch 1, 16 and 64, fp32 and bf16
   autocast, with each backend, and the peak GPU memory;
4. a fine-tuning step of the full model (batch 16, 256x256, AdamW) in
   images/s with each backend, fp32 and bf16, and its peak memory;
5. bf16 autocast against fp32 in the Predictor on the bundled samples:
   time and Dice (the rule for making bf16 the GPU default: >= 1.5x faster
   and Dice within 0.005).

    python benchmarks/gpu_check.py | tee benchmarks/results-gpu-h200.txt

``--cpu-smoke`` runs the same logic on the CPU with tiny shapes, the triton
kernels going through Triton's interpreter (``TRITON_INTERPRET=1``): its
numbers mean nothing, it only shows that the script runs before a GPU ever
sees it (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import sys

if '--cpu-smoke' in sys.argv:  # before anything imports triton
    os.environ['TRITON_INTERPRET'] = '1'

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from napari_vmunet.model import VMUNet, mamba_available  # noqa: E402
from napari_vmunet.model import scan as S  # noqa: E402


@dataclass
class Sizes:
    """What one run measures: full sizes on a GPU, tiny ones for the smoke."""

    stages: list  # (model width, L): D = 8 * width
    grad_shape: tuple  # (batch, D, L) for the gradient check
    model: dict  # VMUNet(**model)
    image: int
    batches: tuple
    train_batch: int
    reps: int
    sweep_fwd: list  # (block_l, block_d, warps)
    sweep_bwd: list  # (block_d, warps)
    crop: int | None  # sample crop for the precision check (None: whole)
    warmup: bool = True  # one untimed call first (compiles the kernels)


GPU = Sizes(
    stages=[(96, 4096), (192, 1024), (384, 256), (768, 64)],
    grad_shape=(2, 192, 1024),
    model={},
    image=256,
    batches=(1, 16, 64),
    train_batch=16,
    reps=3,
    sweep_fwd=[
        (16, 16, 4),
        (32, 4, 2),
        (32, 8, 4),
        (32, 16, 4),
        (32, 16, 8),
        (64, 8, 4),
        (64, 16, 8),
    ],
    sweep_bwd=[(4, 4), (4, 8), (8, 8), (16, 8)],
    crop=None,
)
SMOKE = Sizes(
    stages=[(2, 64), (4, 16)],
    grad_shape=(2, 16, 40),
    model=dict(depths=(1, 1, 1, 1), depths_decoder=(1, 1, 1, 1), dims=(4, 8, 16, 32)),
    image=32,
    batches=(1,),
    train_batch=1,
    reps=1,
    sweep_fwd=[(16, 8, 4)],
    sweep_bwd=[(8, 4)],
    crop=64,
    warmup=False,
)


def sync(dev: torch.device) -> None:
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)


#: False in the smoke run: the interpreter compiles nothing
WARMUP = True


def timed(fn, dev, reps) -> float:
    """Seconds per call after one warm-up call (which also compiles)."""
    if WARMUP:
        fn()
        sync(dev)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(dev)
    return (time.perf_counter() - t) / reps


def reset_peak(dev) -> None:
    if dev.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev) -> str:
    if dev.type != 'cuda':
        return '  n/a'
    return f'{torch.cuda.max_memory_allocated(dev) / 2**30:5.2f}'


def scan_inputs(dim, length, dev, batch=1, stress=False, seed=0):
    """An SS2D-like input (Mamba's dt init); ``stress`` puts softplus(delta +
    bias) up to ~1.5."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (1e-2, 1.0) if stress else (1e-3, 1e-1)
    dt0 = torch.exp(torch.rand(dim, generator=g) * (math.log(hi / lo)) + math.log(lo))
    x = dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=(1.0 if stress else 0.5) * torch.randn(batch, dim, length, generator=g),
        A=-torch.arange(1, 17, dtype=torch.float32).repeat(dim, 1),
        B=torch.randn(batch, 4, 16, length, generator=g),
        C=torch.randn(batch, 4, 16, length, generator=g),
        D=torch.ones(dim),
        delta_bias=dt0 + torch.log(-torch.expm1(-dt0)),
    )
    return {k: v.to(dev) for k, v in x.items()}


def rel(a, ref) -> float:
    return ((a.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def backends(dev) -> list[str]:
    names = ['torch', 'triton']
    if dev.type == 'cuda' and mamba_available():
        names.append('mamba')
    return names


def correctness(sz: Sizes, dev) -> None:
    print('\n== 1. triton scan correctness (normalised max error)')
    for width, length in sz.stages:
        for stress in (False, True) if width == sz.stages[0][0] else (False,):
            x = scan_inputs(8 * width, length, dev, stress=stress)
            with torch.no_grad():
                ref = S.selective_scan_reference(
                    **{k: v.double() for k, v in x.items()}, delta_softplus=True
                )
                out = S.selective_scan(**x, delta_softplus=True, backend='triton')
            print(
                f'forward D={8 * width:5d} L={length:5d}{" stress" if stress else ""}: '
                f'vs float64 reference {rel(out, ref):.1e}, finite '
                f'{bool(torch.isfinite(out).all())}'
            )
    batch, dim, length = sz.grad_shape
    x = scan_inputs(dim, length, dev, batch=batch, seed=1)
    x['z'] = torch.randn(batch, dim, length, device=dev)
    gy = torch.randn(batch, dim, length, device=dev)
    res = {}
    for name in ('torch', 'triton'):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        y = S.selective_scan(**leaves, delta_softplus=True, backend=name)
        y.backward(gy)
        res[name] = {'y': y.detach(), **{k: v.grad for k, v in leaves.items()}}
    errs = ', '.join(
        f'{k} {rel(res["triton"][k], res["torch"][k]):.1e}' for k in res['torch']
    )
    print(f'gradients (batch {batch}, D={dim}, L={length}, z, D) vs torch: {errs}')
    low = {k: v.bfloat16() for k, v in x.items()}
    with torch.no_grad():
        ref = S.selective_scan_reference(
            **{k: v.double() for k, v in low.items()}, delta_softplus=True
        )
        out = S.selective_scan(**low, delta_softplus=True, backend='triton')
    print(
        f'bf16 inputs (fp32 state), output {out.dtype}: vs float64 {rel(out, ref):.1e}'
    )


def scan_times(sz: Sizes, dev) -> None:
    print('\n== 2. scan time per call, batch 1 (ms; fwd / fwd+bwd)')
    names = [*backends(dev), 'reference']
    print(f'{"D":>5} {"L":>5} ' + ''.join(f'{n:>22}' for n in names))
    for width, length in sz.stages:
        x = scan_inputs(8 * width, length, dev)
        cells = []
        for name in names:

            def fwd(name=name, x=x):
                with torch.no_grad():
                    S.selective_scan(**x, delta_softplus=True, backend=name)

            t_f = timed(fwd, dev, 1 if name == 'reference' else sz.reps)
            if name in ('torch', 'triton'):
                leaves = {k: v.clone().requires_grad_() for k, v in x.items()}

                def both(name=name, leaves=leaves):
                    y = S.selective_scan(**leaves, delta_softplus=True, backend=name)
                    y.sum().backward()

                t_b = timed(both, dev, sz.reps)
                cells.append(f'{1e3 * t_f:9.2f} /{1e3 * t_b:9.2f}')
            else:
                cells.append(f'{1e3 * t_f:9.2f} /      n/a')
        print(f'{8 * width:5d} {length:5d} ' + ''.join(f'{c:>22}' for c in cells))


def tile_sweep(sz: Sizes, dev) -> None:
    import napari_vmunet.model.scan_triton as T

    width, length = sz.stages[0]
    x = scan_inputs(8 * width, length, dev)
    print(f'\n== 2b. triton tiles on D={8 * width} L={length} (ms; current defaults: '
          f'fwd L{T.FWD_BLOCK_L}/D{T.FWD_BLOCK_D}/w{T.FWD_WARPS or "auto"} '
          f'narrowed to {T.MIN_PROGRAMS} programs, '
          f'bwd D{T.BWD_BLOCK_D}/w{T.BWD_WARPS})')  # fmt: skip
    saved = T.FWD_BLOCK_D, T.FWD_WARPS, T.BWD_BLOCK_D, T.BWD_WARPS, T.MIN_PROGRAMS
    T.MIN_PROGRAMS = 0  # the tiles as given
    try:
        line = []
        for bl, bd, w in sz.sweep_fwd:
            T.FWD_BLOCK_D, T.FWD_WARPS = bd, w

            def fwd(bl=bl):
                with torch.no_grad():
                    S.selective_scan(
                        **x, delta_softplus=True, backend='triton', block=bl
                    )

            try:
                line.append(
                    f'fwd L{bl}/D{bd}/w{w} {1e3 * timed(fwd, dev, sz.reps):.2f}'
                )
            except Exception as err:  # noqa: BLE001 - e.g. out of registers
                line.append(f'fwd L{bl}/D{bd}/w{w} failed ({type(err).__name__})')
        T.FWD_BLOCK_D, T.FWD_WARPS = saved[:2]
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        for bd, w in sz.sweep_bwd:
            T.BWD_BLOCK_D, T.BWD_WARPS = bd, w

            def both():
                y = S.selective_scan(**leaves, delta_softplus=True, backend='triton')
                y.sum().backward()

            try:
                line.append(f'fwd+bwd D{bd}/w{w} {1e3 * timed(both, dev, sz.reps):.2f}')
            except Exception as err:  # noqa: BLE001
                line.append(f'fwd+bwd D{bd}/w{w} failed ({type(err).__name__})')
    finally:
        T.FWD_BLOCK_D, T.FWD_WARPS, T.BWD_BLOCK_D, T.BWD_WARPS, T.MIN_PROGRAMS = saved
    for i in range(0, len(line), 3):
        print('   '.join(line[i : i + 3]))


def model_forward(sz: Sizes, dev) -> None:
    print(f'\n== 3. VM-UNet forward at {sz.image}x{sz.image}: images/s (peak GiB)')
    torch.manual_seed(0)
    model = VMUNet(**sz.model).to(dev).eval()
    for name in backends(dev):
        model.set_scan_backend(name)
        for batch in sz.batches:
            x = torch.rand(batch, 3, sz.image, sz.image, device=dev)
            cells = []
            outs = {}
            for prec in ('fp32', 'bf16'):
                ctx = (
                    torch.autocast(dev.type, dtype=torch.bfloat16)
                    if prec == 'bf16'
                    else torch.autocast(dev.type, enabled=False)
                )

                def run(x=x, ctx=ctx):
                    with torch.inference_mode(), ctx:
                        return model(x)

                reset_peak(dev)
                outs[prec] = run().float()
                t = timed(run, dev, 1 if name == 'torch' and batch > 16 else sz.reps)
                cells.append(f'{prec} {batch / t:8.1f} ({peak_gib(dev)})')
            diff = (outs['bf16'] - outs['fp32']).abs().max().item()
            print(
                f'{name:7s} batch {batch:3d}: ' + '   '.join(cells)
                + f'   max |p_bf16 - p_fp32| {diff:.3f}'
            )  # fmt: skip


def training_step(sz: Sizes, dev) -> None:
    batch = sz.train_batch
    size = f'{sz.image}x{sz.image}'
    print(
        f'\n== 4. fine-tuning step, full model, batch {batch}, {size}: '
        'images/s (peak GiB)'
    )
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, sz.image, sz.image, generator=g).to(dev)
    target = (
        (torch.rand(batch, 1, sz.image, sz.image, generator=g) > 0.5).float().to(dev)
    )
    times = {}
    for name in backends(dev):
        cells = []
        for prec in ('fp32', 'bf16'):
            torch.manual_seed(0)
            model = VMUNet(**sz.model).to(dev).train()
            model.set_scan_backend(name)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

            def step(model=model, opt=opt, prec=prec):
                opt.zero_grad(set_to_none=True)
                with torch.autocast(
                    dev.type, dtype=torch.bfloat16, enabled=prec == 'bf16'
                ):
                    p = model(x)
                loss = F.binary_cross_entropy(p.float().clamp(1e-6, 1 - 1e-6), target)
                loss.backward()
                opt.step()

            reset_peak(dev)
            t = timed(step, dev, sz.reps)
            times[name, prec] = t
            cells.append(f'{prec} {batch / t:8.2f} ({peak_gib(dev)})')
            del model, opt
        print(f'{name:7s}: ' + '   '.join(cells))
    for prec in ('fp32', 'bf16'):
        if ('torch', prec) in times and ('triton', prec) in times:
            ratio = times['torch', prec] / times['triton', prec]
            print(f'triton step {ratio:.2f}x faster than torch ({prec})')


def precision(sz: Sizes, dev) -> None:
    from napari_vmunet import load_checkpoint
    from napari_vmunet.inference import Predictor
    from napari_vmunet.io import load_sample
    from napari_vmunet.zoo import builtin_checkpoints

    print('\n== 5. Predictor: bf16 autocast against fp32 on the bundled samples')
    if dev.type != 'cuda':
        print('(autocast is CUDA-only: on the CPU both runs are fp32)')
    for sample, model in (('nuclei', 'demo-nuclei'), ('brain', 'demo-brain')):
        image, labels = load_sample(sample)
        data, truth = np.asarray(image.data), np.asarray(labels)
        if sample == 'nuclei':
            truth = truth > 0
        if sz.crop:  # smoke: one corner, one slice
            if data.ndim == 3:
                data, truth = data[90:91], truth[90:91]
            data = data[..., : sz.crop, : sz.crop]
            truth = truth[..., : sz.crop, : sz.crop]
        ckpt = load_checkpoint(builtin_checkpoints()[model])
        res = {}
        for amp in (False, True):
            pred = Predictor(ckpt, device=dev.type, amp=amp, scan_backend='auto')
            if sz.warmup:
                pred.predict(data)  # compiles the kernels
            sync(dev)
            t = time.perf_counter()
            found = pred.predict(data).labels
            sync(dev)
            t = time.perf_counter() - t
            classes = [1] if sample == 'nuclei' else [1, 2]
            dice = np.mean([
                2 * ((found == c) & (truth == c)).sum()
                / max(1, (found == c).sum() + (truth == c).sum())
                for c in classes
            ])  # fmt: skip
            res[amp] = (t, dice)
        (t32, d32), (t16, d16) = res[False], res[True]
        print(
            f'{sample:6s} {tuple(data.shape)}: fp32 {t32:6.2f} s Dice {d32:.4f} | '
            f'bf16 {t16:6.2f} s Dice {d16:.4f} | bf16 {t32 / t16:.2f}x faster, '
            f'Dice change {d16 - d32:+.4f}'
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--cpu-smoke',
        action='store_true',
        help='tiny shapes on the CPU, triton through its interpreter',
    )
    parser.add_argument('--no-sweep', action='store_true', help='skip the tile sweep')
    args = parser.parse_args(argv)
    sz = SMOKE if args.cpu_smoke else GPU
    global WARMUP
    WARMUP = sz.warmup
    if args.cpu_smoke:
        dev = torch.device('cpu')
        torch.set_num_threads(1)
    elif torch.cuda.is_available():
        dev = torch.device('cuda')
    else:
        print('no CUDA GPU here; use --cpu-smoke to check the script itself')
        return 2
    t0 = time.perf_counter()
    triton_version = 'not installed'
    if importlib.util.find_spec('triton') is not None:
        S.load_triton_backend()  # the scan's own import path
        import triton

        triton_version = triton.__version__
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU (smoke test)'
    print(f'torch {torch.__version__} | {name} | triton {triton_version} | '
          f'mamba-ssm {mamba_available()}')  # fmt: skip
    if dev.type == 'cuda':
        backend, why = S.backend_reason(dev)
        print(f'auto picks: {backend} ({why})')
    else:
        print('triton self-check (interpreter):', S.triton_self_check(dev) or 'passed')
    correctness(sz, dev)
    scan_times(sz, dev)
    if not args.no_sweep:
        tile_sweep(sz, dev)
    model_forward(sz, dev)
    training_step(sz, dev)
    precision(sz, dev)
    print(f'\ntotal {time.perf_counter() - t0:.0f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
