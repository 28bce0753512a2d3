"""Run the Triton scan kernels through Triton's interpreter on CPU tensors.

Launched by ``tests/test_scan_triton.py`` in a subprocess: ``TRITON_INTERPRET``
must be set before triton is imported, and the test process itself must
never import triton (it would clash with a napari viewer's OpenGL context).

Every case compares the forward and every gradient with
``selective_scan_reference`` run in float64 and prints one JSON object:
``{case: {"y": err, "u": err, ...}}`` with ``err = max|a - ref| / max|ref|``.

    TRITON_INTERPRET=1 python tests/_triton_scan_cases.py [CASE ...]
"""

from __future__ import annotations

import json
import math
import os
import sys

os.environ['TRITON_INTERPRET'] = '1'

import torch  # noqa: E402

from napari_vmunet.model import scan as S  # noqa: E402

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')


def make_inputs(
    batch, dim, length, groups=4, nstate=16, stress=False, seed=0, z=True, skip=True
):
    """Inputs distributed as in a VM-UNet SS2D (Mamba's dt init); ``stress``
    widens dt so that softplus(delta + bias) reaches ~1.5."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = (1e-2, 1.0) if stress else (1e-3, 1e-1)
    dt0 = torch.exp(
        torch.rand(dim, generator=g) * (math.log(hi) - math.log(lo)) + math.log(lo)
    )
    jitter = 1 + 0.1 * torch.randn(dim, nstate, generator=g)
    x = dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=(1.0 if stress else 0.5) * torch.randn(batch, dim, length, generator=g),
        A=-(torch.arange(1, nstate + 1).float() * jitter).clamp(1, 16),
        B=torch.randn(batch, groups, nstate, length, generator=g),
        C=torch.randn(batch, groups, nstate, length, generator=g),
        D=1 + 0.1 * torch.randn(dim, generator=g),
        z=torch.randn(batch, dim, length, generator=g),
        delta_bias=dt0 + torch.log(-torch.expm1(-dt0)),
    )
    if not z:
        del x['z']
    if not skip:
        del x['D']
    return x


def rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    """``max|a - ref| / max|ref|``; the absolute error where ``ref`` is 0."""
    scale = ref.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    return ((a.double() - ref).abs().max() / scale).item()


def compare(inputs, dtype=torch.float32, time_major=False, softplus=True, block=16):
    """Errors of the triton backend's output and gradients against the
    float64 reference on the same (dtype-rounded) inputs."""
    low = {k: v.to(dtype) for k, v in inputs.items()}
    ref_in = {k: v.double().requires_grad_() for k, v in low.items()}
    ref = S.selective_scan_reference(**ref_in, delta_softplus=softplus)
    g = torch.Generator().manual_seed(1)
    gy = torch.randn(ref.shape, generator=g).to(dtype)
    ref.backward(gy.double())

    x = {k: v.clone().requires_grad_() for k, v in low.items()}
    if time_major:  # SS2D's layout: (L, batch, D) and (L, batch, G, N)
        tm = {
            k: v.detach().movedim(-1, 0).contiguous().requires_grad_()
            if v.dim() >= 3
            else v
            for k, v in x.items()
        }
        out = S.selective_scan(
            **tm,
            delta_softplus=softplus,
            backend='triton',
            time_major=True,
            block=block,
        )
        assert out.shape == (ref.shape[2], ref.shape[0], ref.shape[1]), out.shape
        out.backward(gy.movedim(-1, 0))
        y = out.movedim(0, -1)
        grads = {
            k: v.grad.movedim(0, -1) if v.dim() >= 3 else v.grad for k, v in tm.items()
        }
    else:
        y = S.selective_scan(
            **x, delta_softplus=softplus, backend='triton', block=block
        )
        y.backward(gy)
        grads = {k: v.grad for k, v in x.items()}
    assert y.dtype == dtype, y.dtype
    errs = {'y': rel(y.detach(), ref.detach())}
    for k in inputs:
        assert grads[k].dtype == dtype and grads[k].shape == inputs[k].shape, k
        errs[k] = rel(grads[k], ref_in[k].grad)
    return errs


def case_odd_length():
    """L = 45 with a 16-step chunk: a partial last chunk."""
    return compare(make_inputs(1, 8, 45, groups=1, seed=1))


def case_odd_channels():
    """D = 18 channels in one group: the last channel block is partly
    masked (channel blocks of 4 after narrowing for a small grid)."""
    return compare(make_inputs(1, 18, 20, groups=1, seed=2))


def case_grouped():
    """Grouped B/C with G = 4, batch 2, 6 channels per group."""
    return compare(make_inputs(2, 24, 24, groups=4, seed=3))


def case_stress():
    """softplus(delta + bias) up to ~1.5, A down to -16."""
    x = make_inputs(1, 8, 40, groups=2, stress=True, seed=4)
    d = torch.nn.functional.softplus(x['delta'] + x['delta_bias'][:, None])
    errs = compare(x)
    errs['max_delta'] = d.max().item()
    return errs


def case_no_z_no_D():
    """Neither the z gate nor the D skip."""
    return compare(make_inputs(1, 8, 24, groups=2, seed=5, z=False, skip=False))


def case_no_softplus_no_bias():
    """Raw positive delta, no bias."""
    x = make_inputs(1, 8, 24, groups=2, seed=6)
    del x['delta_bias']
    x['delta'] = torch.rand_like(x['delta']) * 0.3
    return compare(x, softplus=False)


def case_time_major():
    """SS2D's time-major layout, as VM-UNet calls it (no z)."""
    return compare(make_inputs(2, 16, 36, groups=4, seed=7, z=False), time_major=True)


def case_mixed_groups():
    """B shared by all channels (batch, N, L), C in 2 groups, N = 12 (masked
    state lanes), a chunk of 8."""
    x = make_inputs(1, 8, 20, groups=2, nstate=12, seed=8)
    x['B'] = x['B'][:, 0]
    return compare(x, block=8)


def case_bf16():
    """bf16 inputs, fp32 state: within 1e-2 of the reference on the same
    bf16-rounded inputs."""
    return compare(make_inputs(1, 16, 40, groups=2, seed=9), dtype=torch.bfloat16)


def case_model():
    """A small VM-UNet (SS2D's real call path), triton against the torch
    backend: every SS2D block's output, and the gradient of every SS2D
    parameter under a loss on those outputs, each compared on its own (an
    untrained model's output hardly depends on them)."""
    from napari_vmunet.model import VMUNet
    from napari_vmunet.model.vmunet import SS2D

    torch.manual_seed(0)
    model = VMUNet(
        num_classes=2,
        depths=(1, 1, 1, 1),
        depths_decoder=(1, 1, 1, 1),
        dims=(4, 8, 16, 32),
    ).eval()
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, SS2D)}
    seen: dict[str, list] = {n: [] for n in blocks}
    for name, block in blocks.items():
        block.register_forward_hook(lambda m, i, o, name=name: seen[name].append(o))
    params = {f'{n}.{k}': p for n, b in blocks.items() for k, p in b.named_parameters()}
    x = torch.rand(1, 3, 32, 32)
    grads = []
    for backend in ('torch', 'triton'):
        model.zero_grad()
        model.set_scan_backend(backend)
        model(x)
        loss = sum(
            (o[-1] * torch.linspace(-1, 1, o[-1].numel()).view_as(o[-1])).sum()
            for o in seen.values()
        )
        loss.backward()
        grads.append({k: p.grad.clone() for k, p in params.items()})
    return {
        'ss2d_out': max(rel(t.detach(), r.detach().double()) for r, t in seen.values()),
        'ss2d_param_grads': max(rel(grads[1][k], grads[0][k].double()) for k in params),
        'blocks': len(blocks),
    }


def case_self_check():
    """The one-time self-check that "auto" runs on a GPU, on the CPU."""
    problem = S.triton_self_check('cpu')
    return {'passed': float(problem is None), 'problem': problem}


CASES = {
    name[len('case_') :]: fn
    for name, fn in globals().items()
    if name.startswith('case_')
}


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    wanted = argv or list(CASES)
    results = {}
    for name in wanted:
        results[name] = CASES[name]()
    json.dump(results, sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
