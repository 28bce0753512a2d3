"""The fast CPU selective scans (the pure-PyTorch one and the numba kernels)
against mamba-ssm's reference loop."""

from __future__ import annotations

import gc
import math

import pytest
import torch

from napari_vmunet.model import scan as S
from napari_vmunet.model import scan_torch
from napari_vmunet.model.scan import selective_scan, selective_scan_reference

# (channels D = 4 directions x 2C, length L) of the four VM-UNet stages at 256^2
STAGES = {
    'stage1': (768, 4096),
    'stage2': (1536, 1024),
    'stage3': (3072, 256),
    'stage4': (6144, 64),
}
#: the CPU backends held to the reference's accuracy
FAST = ('torch', 'numba')


def make_inputs(batch, dim, length, groups=4, nstate=16, stress=False, seed=0):
    """Inputs distributed as in a VM-UNet SS2D (dt init of Mamba/VMamba).

    ``stress`` widens dt to [1e-2, 1] and delta to N(0, 1), so
    softplus(delta + bias) reaches ~1.5: a log-decay cumsum/divide scan
    overflows there.
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = (1e-2, 1.0) if stress else (1e-3, 1e-1)
    dt0 = torch.exp(
        torch.rand(dim, generator=g) * (math.log(hi) - math.log(lo)) + math.log(lo)
    )
    bias = dt0 + torch.log(-torch.expm1(-dt0))
    scale = 1.0 if stress else 0.5
    jitter = 1 + 0.1 * torch.randn(dim, nstate, generator=g)
    A = -(torch.arange(1, nstate + 1).float() * jitter).clamp(1, 16)
    return dict(
        u=torch.randn(batch, dim, length, generator=g),
        delta=scale * torch.randn(batch, dim, length, generator=g),
        A=A,
        B=torch.randn(batch, groups, nstate, length, generator=g),
        C=torch.randn(batch, groups, nstate, length, generator=g),
        D=1 + 0.1 * torch.randn(dim, generator=g),
        delta_bias=bias,
    )


def loop_reference(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False
):
    """The recurrence written step by step from per-step tensors.

    Same mathematics as ``selective_scan_reference`` (checked below), but
    cheap to differentiate at full stage size: the reference slices
    ``(batch, D, L, N)`` tensors per step, and each slice's backward
    allocates a full-size zero tensor -- hours at stage 1 in float64.
    """
    d = delta + delta_bias[:, None] if delta_bias is not None else delta
    d = torch.nn.functional.softplus(d) if delta_softplus else d
    batch, dim, length = u.shape
    reps = dim // B.shape[1]
    x = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for u_t, d_t, B_t, C_t in zip(
        u.unbind(-1), d.unbind(-1), B.unbind(-1), C.unbind(-1), strict=True
    ):
        x = torch.exp(d_t[..., None] * A) * x + (
            (d_t * u_t)[..., None] * B_t.repeat_interleave(reps, dim=1)
        )
        ys.append((x * C_t.repeat_interleave(reps, dim=1)).sum(-1))
    y = torch.stack(ys, dim=-1)
    return y + u * D[:, None] if D is not None else y


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a.double() - ref.double()).abs().max() / ref.abs().max()).item()


def grads(fn, inputs: dict, names, dtype, seed=1):
    leaves = {
        k: v.detach().to(dtype).requires_grad_(k in names) for k, v in inputs.items()
    }
    y = fn(**leaves, delta_softplus=True)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    got = torch.autograd.grad(y, [leaves[k] for k in names], g.to(y.dtype))
    return y.detach(), dict(zip(names, got, strict=True))


def fast_grads(inputs: dict, names, **options):
    """``(backend, y, gradients)`` of each CPU scan in ``FAST``, in float32."""
    for backend in FAST:
        y, got = grads(
            lambda **kw: selective_scan(**kw, backend=backend, **options),  # noqa: B023
            inputs,
            names,
            torch.float32,
        )
        yield backend, y, got


@pytest.mark.parametrize('stage', list(STAGES))
def test_forward_matches_reference_on_vmunet_stage_shapes(stage):
    dim, length = STAGES[stage]
    inputs = make_inputs(1, dim, length)
    with torch.no_grad():
        ref64 = selective_scan_reference(
            **{k: v.double() for k, v in inputs.items()}, delta_softplus=True
        )
        ref32 = selective_scan_reference(**inputs, delta_softplus=True)
        for backend in FAST:
            fast = selective_scan(**inputs, delta_softplus=True, backend=backend)
            assert torch.isfinite(fast).all(), backend
            assert fast.dtype == torch.float32
            assert rel_err(fast, ref64) <= 1e-5, backend
            assert rel_err(fast, ref32) <= 1e-5, backend


NAMES = ['u', 'delta', 'A', 'B', 'C', 'D', 'delta_bias']


def test_loop_reference_is_the_reference_forward_and_backward():
    inputs = make_inputs(2, 48, 40, seed=8)
    y_ref, g_ref = grads(selective_scan_reference, inputs, NAMES, torch.float64)
    y_loop, g_loop = grads(loop_reference, inputs, NAMES, torch.float64)
    assert rel_err(y_loop, y_ref) <= 1e-12
    for name in NAMES:
        assert rel_err(g_loop[name], g_ref[name]) <= 1e-12, name


@pytest.mark.parametrize('stage', list(STAGES))
def test_backward_matches_reference_on_vmunet_stage_shapes(stage):
    dim, length = STAGES[stage]
    inputs = make_inputs(1, dim, length, seed=3)
    names = NAMES
    _, ref = grads(loop_reference, inputs, names, torch.float64)
    for backend, _, fast in fast_grads(inputs, names):
        for name in names:
            assert torch.isfinite(fast[name]).all(), (backend, name)
            assert rel_err(fast[name], ref[name]) <= 1e-5, (backend, name)


def test_stress_inputs_stay_finite_and_accurate():
    dim, length = STAGES['stage1']
    inputs = make_inputs(1, dim, length, stress=True, seed=5)
    d = torch.nn.functional.softplus(inputs['delta'] + inputs['delta_bias'][:, None])
    assert d.max() > 1.4  # the regime where cumsum/divide chunking overflows
    names = ['u', 'delta', 'A', 'B', 'C']
    ref_y, ref = grads(loop_reference, inputs, names, torch.float64)
    for backend, y, fast in fast_grads(inputs, names):
        assert torch.isfinite(y).all(), backend
        assert rel_err(y, ref_y) <= 1e-5, backend
        for name in names:
            assert rel_err(fast[name], ref[name]) <= 1e-5, (backend, name)


@pytest.mark.parametrize(
    'b_shape, c_shape',
    [
        ('time_invariant', 'grouped'),
        ('single_group', 'time_invariant'),
        ('grouped2', 'single_group'),
    ],
)
def test_other_B_C_layouts_and_z_gate(b_shape, c_shape):
    batch, dim, length, nstate = 2, 32, 37, 8
    inputs = make_inputs(batch, dim, length, groups=4, nstate=nstate, seed=7)
    g = torch.Generator().manual_seed(11)
    layouts = {
        'time_invariant': lambda: torch.randn(dim, nstate, generator=g),
        'single_group': lambda: torch.randn(batch, nstate, length, generator=g),
        'grouped': lambda: torch.randn(batch, 4, nstate, length, generator=g),
        'grouped2': lambda: torch.randn(batch, 2, nstate, length, generator=g),
    }
    inputs['B'] = layouts[b_shape]()
    inputs['C'] = layouts[c_shape]()
    inputs['z'] = torch.randn(batch, dim, length, generator=g)
    names = list(inputs)
    ref_y, ref = grads(selective_scan_reference, inputs, names, torch.float64)
    for backend, y, fast in fast_grads(inputs, names, block=5, slab=64):
        assert rel_err(y, ref_y) <= 1e-5, backend
        for name in names:
            assert rel_err(fast[name], ref[name]) <= 1e-5, (backend, name)


def test_time_major_layout_is_the_same_scan():
    inputs = make_inputs(2, 64, 50, seed=2)
    with torch.no_grad():
        ref = selective_scan(**inputs, delta_softplus=True, backend='reference')
        tm = {
            k: (v.movedim(-1, 0).contiguous() if k in 'u delta B C' else v)
            for k, v in inputs.items()
        }
        for backend in (*FAST, 'reference'):
            out = selective_scan(
                **tm, delta_softplus=True, backend=backend, time_major=True
            )
            assert out.shape == (50, 2, 64)
            assert rel_err(out.movedim(0, -1), ref) <= 1e-5


def test_block_and_slab_sizes_do_not_change_the_result():
    inputs = make_inputs(1, 96, 45, groups=4, seed=4)
    with torch.no_grad():
        base = selective_scan(**inputs, delta_softplus=True, backend='reference')
        for block, slab in [(1, 16), (4, 100), (8, 12288), (64, 10**6)]:
            out = S.selective_scan(
                **inputs, delta_softplus=True, backend='torch', block=block, slab=slab
            )
            assert rel_err(out, base) <= 1e-5, (block, slab)


def test_bfloat16_inputs_are_computed_in_float32_and_returned_in_kind():
    inputs = make_inputs(1, 32, 20, seed=9)
    low = {k: v.bfloat16() if k in ('u', 'delta') else v for k, v in inputs.items()}
    with torch.no_grad():
        ref = selective_scan_reference(**low, delta_softplus=True)
        for backend in FAST:
            out = selective_scan(**low, delta_softplus=True, backend=backend)
            assert out.dtype == torch.bfloat16
            assert rel_err(out.float(), ref.float()) <= 1e-2, backend


def test_auto_backend_is_numba_on_cpu(monkeypatch):
    from napari_vmunet import _scan_warmup

    monkeypatch.setattr(_scan_warmup, '_process', None)  # none running
    assert S.resolve_backend('auto', 'cpu') == 'numba'
    assert S.backend_reason('cpu') == ('numba', 'the fused numba kernels run on CPUs')
    with pytest.raises(ValueError, match='unknown scan backend'):
        S.resolve_backend('fast', 'cpu')


def test_mamba_backend_gives_a_clear_error_without_cuda():
    inputs = make_inputs(1, 8, 4)
    with pytest.raises(S.MambaUnavailableError, match='backend="torch"'):
        selective_scan(**inputs, backend='mamba')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_torch_backend_on_cuda_matches_reference():
    inputs = make_inputs(2, 256, 300, seed=6)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad():
        ref = selective_scan_reference(**inputs, delta_softplus=True)
        out = selective_scan(**cuda, delta_softplus=True, backend='torch').cpu()
    assert rel_err(out, ref) <= 1e-5


@pytest.mark.skipif(not S.mamba_available(), reason='needs mamba-ssm on CUDA')
def test_mamba_kernel_matches_reference():
    inputs = make_inputs(2, 256, 300, seed=6)
    cuda = {k: v.cuda() for k, v in inputs.items()}
    with torch.no_grad():
        ref = selective_scan_reference(**inputs, delta_softplus=True)
        out = selective_scan(**cuda, delta_softplus=True, backend='mamba').cpu()
    assert rel_err(out, ref) <= 1e-4


def test_smaller_state_chunks_take_longer_blocks_and_stay_exact(monkeypatch):
    # the first stage of a 16..128-wide VM-UNet on one 128x128 tile
    inputs = make_inputs(1, 128, 1024, seed=5)
    seen = []
    apply = S.BlockedSelectiveScan.apply

    def spy(*args):
        seen.append(args[-2])  # the block size
        return apply(*args)

    monkeypatch.setattr(S.BlockedSelectiveScan, 'apply', spy)
    _, ref = grads(loop_reference, inputs, NAMES, torch.float64)
    y, fast = grads(
        lambda **kw: selective_scan(**kw, backend='torch'), inputs, NAMES, torch.float32
    )
    assert seen == [S.MAX_BLOCK] and S.MAX_BLOCK > S.DEFAULT_BLOCK
    for name in NAMES:
        assert rel_err(fast[name], ref[name]) <= 1e-5, name
    # stage 1 at full width: a 12 K-float chunk (4 rows x 16 x 192) takes a
    # block of BLOCK_FLOATS; stage 4 fills the slab and keeps the default
    seen.clear()
    with torch.no_grad():
        selective_scan(**make_inputs(1, *STAGES['stage1']), backend='torch')
        selective_scan(**make_inputs(1, *STAGES['stage4']), backend='torch')
    assert seen == [S.BLOCK_FLOATS // 12288, S.DEFAULT_BLOCK]
    assert S.DEFAULT_BLOCK < seen[0] < S.MAX_BLOCK


@pytest.mark.parametrize('decay', [(1.0, 'exp_'), (S.LOG2E, 'exp2_')])
def test_both_decay_exponentials_match_the_reference(monkeypatch, decay):
    # the CPU scan computes exp(d A) as exp or as exp2(d A log2 e), whichever
    # this machine measured faster; both must be exact, stress inputs too
    monkeypatch.setattr(scan_torch, '_decay_base', lambda device_type: decay)
    inputs = make_inputs(2, 64, 300, stress=True, seed=12)
    ref_y, ref = grads(loop_reference, inputs, NAMES, torch.float64)
    y, fast = grads(
        lambda **kw: selective_scan(**kw, backend='torch'), inputs, NAMES, torch.float32
    )
    assert torch.isfinite(y).all()
    assert rel_err(y, ref_y) <= 1e-5
    for name in NAMES:
        assert rel_err(fast[name], ref[name]) <= 1e-5, name


def test_decay_base_is_exp_or_exp2_and_decided_once():
    scale, method = S._decay_base('cpu')
    assert (scale, method) in {(1.0, 'exp_'), (S.LOG2E, 'exp2_')}
    assert S._decay_base('cpu') == (scale, method)
    x = -torch.rand(1000) * 30
    assert torch.allclose(getattr(x * scale, method)(), torch.exp(x), rtol=1e-6)
    assert S._decay_base('cuda') == (1.0, 'exp_')
    # the timing runs on one thread and leaves the user's setting as it was
    threads = torch.get_num_threads()
    assert S._decay_base.__wrapped__('cpu') in {(1.0, 'exp_'), (S.LOG2E, 'exp2_')}
    assert torch.get_num_threads() == threads


@pytest.mark.parametrize('enabled', [True, False])
def test_collector_is_off_during_the_scan_and_restored_after(monkeypatch, enabled):
    # the scan's thousands of views would trigger full collections; it pauses
    # the collector in forward and backward and leaves it as it found it
    states = []
    block_states = scan_torch._block_states

    def spy(*args):
        states.append(gc.isenabled())
        return block_states(*args)

    monkeypatch.setattr(scan_torch, '_block_states', spy)
    inputs = make_inputs(2, 64, 40, seed=3)
    (gc.enable if enabled else gc.disable)()
    try:
        y, fast = grads(
            lambda **kw: selective_scan(**kw, backend='torch'),
            inputs,
            NAMES,
            torch.float32,
        )
        assert gc.isenabled() == enabled
        # a scan that fails midway restores it too
        monkeypatch.setattr(scan_torch, '_block_states', lambda *a: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            selective_scan(**inputs, backend='torch')
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
    assert states and not any(states)  # forward and backward blocks alike
    _, ref = grads(loop_reference, inputs, NAMES, torch.float64)
    for name in NAMES:
        assert rel_err(fast[name], ref[name]) <= 1e-5, name


def test_the_step_sizes_softplus_in_place_leaves_the_callers_tensors_alone():
    """Without gradients the scan applies softplus in place to its own sum
    ``delta + delta_bias`` (one full-size allocation less); the caller's
    ``delta`` must stay as it was, and the result as with gradients."""
    inputs = make_inputs(2, 64, 48)
    before = inputs['delta'].clone()
    with torch.no_grad():
        fast = selective_scan(**inputs, delta_softplus=True, backend='torch')
    assert torch.equal(inputs['delta'], before)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    graded = selective_scan(**leaves, delta_softplus=True, backend='torch')
    assert torch.equal(fast, graded.detach())
