"""The ``"torch"`` selective-scan backend: the blocked pure-PyTorch scan.

The scan that runs wherever PyTorch does -- every CPU, and a GPU without
a usable triton -- and the one the Triton kernels are self-checked
against.  How it works (time in blocks, reused buffers, the hand-written
backward that keeps only block-boundary states) is told in
:mod:`napari_vmunet.model.scan`, which picks the backend and calls this one
through :func:`_scan_time_major`; this module holds that code and the
blocking constants measured for it.  :class:`BlockedSelectiveScan` is the
core on rows, :func:`_scan_time_major` maps mamba-ssm's arguments onto
rows and back.
"""

from __future__ import annotations

import functools
import math
import time

import torch
import torch.nn.functional as F

from .gc_pause import gc_paused

#: Time steps per block of the blocked scan: the block's buffers
#: (``block`` x one slab) stay in L2 cache.
DEFAULT_BLOCK = 8


def _n_groups(M: torch.Tensor, dim: int) -> int:
    """How many channel groups B or C has (``dim`` when time-invariant)."""
    if M.dim() == 2:
        return dim
    return 1 if M.dim() == 3 else M.shape[-2]


def _grouped_time_major(
    M: torch.Tensor, batch: int, dim: int, length: int, groups: int
) -> torch.Tensor:
    """B or C in the time-major layout ``(L, batch, groups, N)``.

    ``M`` is time-invariant ``(D, N)`` or already time-major ``(L, batch, N)``
    / ``(L, batch, G, N)``.  VM-UNet's grouped input passes through as it
    is; the rarer layouts are broadcast, which costs ``L * groups * N``.
    """
    if M.dim() == 2:  # time-invariant: one group per channel
        return M.float()[None, None].expand(length, batch, dim, M.shape[1])
    if M.dim() == 3:
        M = M[:, :, None]
    M = M.float()
    own = M.shape[2]
    if own != groups:
        M = M[:, :, :, None].expand(-1, -1, -1, groups // own, -1)
        M = M.reshape(length, batch, groups, -1)
    return M.contiguous()


#: Elements of state (rows x N x P) advanced by one in-place step; larger
#: states are split into row chunks.  Each chunk pays a fixed cost per op
#: and copies of its operands, so bigger is better until the block's
#: buffers fall out of cache: 48 K floats measured 1.1-1.3x faster than
#: 12 K at VM-UNet's stages 2-4 on an AVX2 EPYC (512 KB L2), forward and
#: training alike; stage 1 (a 12 K state) is the same either way.
DEFAULT_SLAB = 49152

#: On GPUs the cost is kernel launches, not cache misses: one chunk of rows
#: and longer blocks mean fewer, larger operations.
GPU_BLOCK = 64
GPU_SLAB = 2**40

#: CPU blocks of a smaller state chunk are longer, up to about this many
#: floats of state per block (``block`` x chunk), ``MAX_BLOCK`` steps at
#: most: each step's operations cost a fixed few microseconds besides their
#: work, so a small chunk runs too many of them, while a large chunk's
#: buffers leave the cache.  Measured on an AVX2 EPYC (CPU time, forward and
#: backward, 7 rounds): a 12 K-float chunk (stage 1 of the dock's 24..192
#: model at batch 4, or of the full model at batch 1) is fastest at 24
#: steps (forward 1.15-1.26x, backward 1.1-1.2x faster than 8), a 24 K one
#: at 12 (1.02-1.04x), 48 K ones at 8 (12 and more are 1.1-1.3x slower);
#: a 2 K chunk (a 16..128 model on one tile) 1.06-1.15x faster at 32 than
#: at 16 steps.
BLOCK_FLOATS = 294912
MAX_BLOCK = 32


def block_and_slab(
    device: torch.device, block: int | None = None, slab: int | None = None
) -> tuple[int, int]:
    """The blocking for ``device``: cache-sized on CPUs, launch-sized on GPUs."""
    cpu = device.type == 'cpu'
    return (
        int(block or (DEFAULT_BLOCK if cpu else GPU_BLOCK)),
        int(slab or (DEFAULT_SLAB if cpu else GPU_SLAB)),
    )


#: ``log2(e)``: ``exp(x) == exp2(x * LOG2E)``.
LOG2E = 1.4426950408889634


@functools.cache
def _decay_base(device_type: str) -> tuple[float, str]:
    """``(scale, method)`` with ``exp(x) == getattr(x * scale, method)()``:
    ``exp2_`` or ``exp_``, whichever this machine computes faster.

    The decays are the bulk of the scan's transcendental work.  On CPUs
    ``torch.exp`` goes through MKL where torch has it, which is fast on
    Intel and slow elsewhere, and ``torch.exp2`` through torch's own
    vectorised kernels: measured on an AVX2 AMD EPYC, exp2 1.8x faster
    (0.63 vs 1.13 ns per element), but 2.9x slower with
    ``ATEN_CPU_CAPABILITY=default``.  So the two are timed once per process
    (milliseconds) on non-positive inputs; both are accurate to
    about an ulp, and only non-positive numbers are exponentiated either
    way.  Elsewhere (GPUs) exp stays.
    """
    if device_type != 'cpu':
        return 1.0, 'exp_'
    x = -torch.rand(65536, generator=torch.Generator().manual_seed(0)) * 8
    out = torch.empty_like(x)
    best = {'exp_': math.inf, 'exp2_': math.inf}
    # on one thread: split over busy cores the timings are all barrier waits
    # (measured: 0.6-0.9 s and a random pick with 2 threads on a loaded VM)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(9):  # the best of 9: a shared CPU stalls some of them
            for method in best:
                start = time.perf_counter()
                for _ in range(2):
                    getattr(out.copy_(x), method)()
                best[method] = min(best[method], time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    # exp2 only when clearly faster: where the two are close (MKL on Intel,
    # ARM), exp stays and the choice does not flip from run to run
    if best['exp2_'] < 0.85 * best['exp_']:
        return LOG2E, 'exp2_'
    return 1.0, 'exp_'


def _block_states(dA: list, H: list, h0: torch.Tensor, T: int) -> None:
    """Run the recurrence over one block, in place.

    ``dA`` and ``H`` are lists of per-step views of reused buffers (indexing
    a tensor in the loop would cost as much as the arithmetic); on entry
    ``H[t]`` holds ``dB_t*u_t``, on exit the state ``x_t``.  ``h0`` is the
    state before the block.
    """
    H[0].addcmul_(dA[0], h0)
    for t in range(1, T):
        H[t].addcmul_(dA[t], H[t - 1])


def _split(x: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Views of ``x`` in pieces of ``size`` along dim 0, in one call."""
    return torch.split(x, size)


def _chunks(rows: int, per_row: int, slab: int) -> list[tuple[int, int]]:
    step = max(1, slab // per_row)
    return [(r, min(r + step, rows)) for r in range(0, rows, step)]


class BlockedSelectiveScan(torch.autograd.Function):
    """Core of the ``"torch"`` backend on independent "rows".

    A row is a set of ``P`` channels that share one ``B_t``/``C_t`` (a
    ``(batch, group)`` pair, or a slice of one).  Inputs are contiguous
    fp32: ``u, d (L, R, P)`` with ``d`` the final step size (bias and
    softplus already applied), ``A (R, N, P)``, ``B, C (L, R, N)``.
    Returns ``y (L, R, P)`` with ``y_t = <x_t, C_t>`` and
    ``x_t = exp(d_t A) x_{t-1} + d_t u_t B_t``.

    Rows are processed in chunks whose state (``rows x N x P``) is about
    ``slab`` floats, and time in blocks of ``block`` steps; a row's state is
    ``(N, P)`` so the read-out is a row-vector times matrix ``bmm``, the
    fast way round on CPU.
    """

    @staticmethod
    @gc_paused
    def forward(ctx, u, d, A, B, C, block, slab):
        length, rows, per = u.shape
        nstate = A.shape[1]
        chunks = _chunks(rows, nstate * per, slab)
        y = u.new_empty(length, rows, per)
        save = any(ctx.needs_input_grad[:5])
        nblocks = -(-length // block)
        saved = u.new_empty(nblocks, rows, nstate, per) if save else None
        scale, exp_ = _decay_base(u.device.type)
        A_s = A * scale if scale != 1 else A
        for r0, r1 in chunks:
            r = r1 - r0
            if len(chunks) == 1:  # one chunk: work on the inputs as they are
                d_c, u_c, B_c, C_c, y_c = d, u, B, C, y
            else:  # contiguous per-chunk copies keep every block view flat
                d_c, u_c, B_c, C_c = (t[:, r0:r1].contiguous() for t in (d, u, B, C))
                y_c = u.new_empty(length, r, per)
            A_c = A_s[r0:r1]
            dA_buf = u.new_empty(block, r, nstate, per)
            # d*u a block at a time, in a buffer that stays in cache: for the
            # whole sequence at once it was one more (L, rows, P) allocation,
            # whose page faults cost more than the multiplication
            du_buf = u.new_empty(block, r, 1, per)
            # two state buffers in turn: a block starts from the last state
            # of the one before, read in place
            H_bufs = (torch.empty_like(dA_buf), torch.empty_like(dA_buf))
            dA_v, H_vs = dA_buf.unbind(0), [b.unbind(0) for b in H_bufs]
            h = u.new_zeros(r, nstate, per)
            saved_v = saved[:, r0:r1].unbind(0) if saved is not None else None
            # every block's operands as views, cut once (slicing in the loop
            # costs as much as the arithmetic of a small block)
            blocks = zip(
                _split(d_c[:, :, None], block),
                _split(u_c[:, :, None], block),
                _split(B_c[..., None], block),
                _split(C_c.view(length * r, 1, nstate), block * r),
                _split(y_c.view(length * r, 1, per), block * r),
                strict=True,
            )
            for i, (d_b, u_b, B_b, C_b, y_b) in enumerate(blocks):
                T = d_b.shape[0]
                dA = dA_buf if block == T else dA_buf[:T]
                du = du_buf if block == T else du_buf[:T]
                H = H_bufs[i % 2] if block == T else H_bufs[i % 2][:T]
                H_v = H_vs[i % 2]
                if saved_v is not None:
                    saved_v[i].copy_(h)
                getattr(torch.mul(d_b, A_c, out=dA), exp_)()
                torch.mul(torch.mul(d_b, u_b, out=du), B_b, out=H)
                _block_states(dA_v, H_v, h, T)
                torch.bmm(C_b, H.view(T * r, nstate, per), out=y_b)
                h = H_v[T - 1]
            if y_c is not y:
                y[:, r0:r1] = y_c
        if save:
            ctx.save_for_backward(u, d, A, B, C, saved)
            ctx.block, ctx.slab = block, slab
        return y

    @staticmethod
    @gc_paused
    def backward(ctx, gy):
        u, d, A, B, C, saved = ctx.saved_tensors
        block = ctx.block
        length, rows, per = u.shape
        nstate = A.shape[1]
        gy = gy.contiguous()
        g_u = torch.empty_like(u)
        g_d = torch.empty_like(u)
        g_A = torch.zeros_like(A)
        g_B = torch.empty_like(B)
        g_C = torch.empty_like(C)
        chunks = _chunks(rows, nstate * per, ctx.slab)
        scale, exp_ = _decay_base(u.device.type)
        A_s = A * scale if scale != 1 else A
        for r0, r1 in chunks:
            r = r1 - r0
            # contiguous per-chunk copies, as in the forward: element-wise
            # ops that broadcast a strided slice of a wider tensor take
            # PyTorch's slow path (25x per call under the profiler; the full
            # model's training step went from 15.4 to 12.7 s with this)
            whole = len(chunks) == 1
            u_c, d_c, B_c, C_c, gy_c = (
                t if whole else t[:, r0:r1].contiguous() for t in (u, d, B, C, gy)
            )
            du_c = d_c * u_c
            gu_c, gd_c, gB_c, gC_c = (
                t if whole else t.new_empty(length, r, t.shape[-1])
                for t in (g_u, g_d, g_B, g_C)
            )
            A_c, As_c, gA_c = A[r0:r1], A_s[r0:r1], g_A[r0:r1]
            dA_buf = u.new_empty(block, r, nstate, per)
            Hs_buf = u.new_empty(block + 1, r, nstate, per)
            G_buf = torch.empty_like(dA_buf)
            # A's gradient is summed over time once per chunk, not per block
            gA_acc = torch.zeros_like(dA_buf)
            dA_v, Hs_v, G_v = (b.unbind(0) for b in (dA_buf, Hs_buf, G_buf))
            carry = u.new_zeros(r, nstate, per)
            saved_v = saved[:, r0:r1].unbind(0)
            n_all = length * r
            # every block's operands as views, cut once
            blocks = list(
                zip(
                    _split(d_c[:, :, None], block),
                    _split(du_c[:, :, None], block),
                    _split(du_c.view(n_all, 1, per), block * r),
                    _split(B_c[..., None], block),
                    _split(B_c.view(n_all, 1, nstate), block * r),
                    _split(C_c[..., None], block),
                    _split(gy_c[:, :, None], block),
                    _split(gy_c.view(n_all, 1, per), block * r),
                    _split(gu_c, block),
                    _split(gd_c, block),
                    _split(gB_c.view(n_all, 1, nstate), block * r),
                    _split(gC_c.view(n_all, 1, nstate), block * r),
                    saved_v,
                    strict=True,
                )
            )
            for (
                d3_b,
                du3_b,
                duv_b,
                B4_b,
                Bv_b,
                C4_b,
                gy3_b,
                gyv_b,
                gu_b,
                gd_b,
                gB_b,
                gC_b,
                h0,
            ) in reversed(blocks):
                T = d3_b.shape[0]
                n = T * r
                full = block == T
                dA = dA_buf if full else dA_buf[:T]
                Hs = Hs_buf if full else Hs_buf[: T + 1]
                GH = G_buf if full else G_buf[:T]
                # recompute this block's states from its saved start state
                getattr(torch.mul(d3_b, As_c, out=dA), exp_)()
                Hs_v[0].copy_(h0)
                torch.mul(du3_b, B4_b, out=Hs[1:])
                _block_states(dA_v, Hs_v[1:], Hs_v[0], T)
                # reverse recurrence of the state gradient
                torch.mul(gy3_b, C4_b, out=GH)
                G_v[T - 1].add_(carry)
                for t in range(T - 2, -1, -1):
                    G_v[t].addcmul_(dA_v[t + 1], G_v[t + 1])
                torch.mul(dA_v[0], G_v[0], out=carry)
                # read-out C and input term B, as row vector x transposed
                # state: the same product as state x column vector, but
                # 10-15x faster on CPU (that orientation took a quarter of
                # a small model's training step)
                torch.bmm(gyv_b, Hs[1:].view(n, nstate, per).transpose(1, 2), out=gC_b)
                torch.bmm(duv_b, GH.view(n, nstate, per).transpose(1, 2), out=gB_b)
                # S = sum_n GH B, the input term's share of u and d: kept in
                # u's gradient and finished for the whole chunk below (two
                # ops per block on (T, rows, P) cost more than their work)
                torch.bmm(Bv_b, GH.view(n, nstate, per), out=gu_b.view(n, 1, per))
                # decay term: X = GH x_{t-1} exp(d A), summed with A over n
                # straight into d's gradient
                X = GH.mul_(Hs[:-1]).mul_(dA)
                (gA_acc if full else gA_acc[:T]).addcmul_(X, d3_b)
                torch.sum(X.mul_(A_c), -2, out=gd_b)
            gA_c += gA_acc.sum(0)
            gd_c.addcmul_(gu_c, u_c)  # d's input term: S u
            gu_c.mul_(d_c)  # u's: S d
            if not whole:
                g_u[:, r0:r1], g_d[:, r0:r1] = gu_c, gd_c
                g_B[:, r0:r1], g_C[:, r0:r1] = gB_c, gC_c
        return g_u, g_d, g_A, g_B, g_C, None, None


def _step_sizes(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, softplus: bool
) -> torch.Tensor:
    """The final step sizes ``softplus(delta + delta_bias)`` in fp32 (each
    part optional)."""
    d = delta.float()
    if delta_bias is not None:
        d = d + delta_bias.float()
    if not softplus:
        return d
    if delta_bias is not None and not (torch.is_grad_enabled() and d.requires_grad):
        # d is ours (the sum above) and no gradient needs its input:
        # softplus in place spares an (L, batch, D) allocation, whose page
        # faults cost as much as the softplus's additions
        return torch._C._nn.softplus(d, 1.0, 20.0, out=d)
    return F.softplus(d)


def _scan_time_major(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    z: torch.Tensor | None,
    delta_bias: torch.Tensor | None,
    delta_softplus: bool,
    block: int | None = None,
    slab: int | None = None,
    core: type[torch.autograd.Function] | None = None,
) -> torch.Tensor:
    """The ``"torch"`` backend on time-major tensors (see :func:`selective_scan`).

    Reshapes the problem into rows for :class:`BlockedSelectiveScan` with
    differentiable views and broadcasts, so autograd maps the row gradients
    back to ``A``, ``B`` and ``C``.  ``core`` runs the rows instead (the
    numba scan, with its ``step_sizes``) where the decays are sure to be
    non-positive; elsewhere the blocked scan does.
    """
    if A.is_complex():
        raise NotImplementedError('complex A is not supported')
    explicit_block = block
    block, slab = block_and_slab(u.device, block, slab)
    length, batch, dim = u.shape
    nstate = A.shape[1]
    gb, gc = _n_groups(B, dim), _n_groups(C, dim)
    groups = max(gb, gc)
    if dim % groups or groups % min(gb, gc):
        raise ValueError(
            f'B {tuple(B.shape)} and C {tuple(C.shape)} do not fit {dim} '
            'channels: their group count must divide the channel count'
        )
    per = dim // groups
    uf = u.float()
    core, d = _core_and_step_sizes(core, A, delta, delta_bias, delta_softplus)
    split = _row_split(per, nstate, slab, batch * groups, core is not None)
    P = per // split
    rows = batch * groups * split
    if core is not None:
        block = explicit_block  # its own checkpoint interval when None
    elif explicit_block is None and u.device.type == 'cpu':
        chunk = max(1, min(rows, slab // (nstate * P))) * nstate * P
        block = min(MAX_BLOCK, max(block, BLOCK_FLOATS // chunk))

    def rowwise(M: torch.Tensor) -> torch.Tensor:  # (L, b, G, N) -> (L, R, N)
        M = _grouped_time_major(M, batch, dim, length, groups)
        M = M[:, :, :, None].expand(-1, -1, -1, split, -1)
        return M.reshape(length, rows, nstate).contiguous()

    A_rows = (
        A.float()
        .view(groups, split, P, nstate)
        .transpose(2, 3)[None]
        .expand(batch, -1, -1, -1, -1)
        .reshape(rows, nstate, P)
    )
    y = (
        (core or BlockedSelectiveScan)
        .apply(
            uf.reshape(length, rows, P).contiguous(),
            d.reshape(length, rows, P).contiguous(),
            A_rows.contiguous(),
            rowwise(B),
            rowwise(C),
            block,
            int(slab),
        )
        .view(length, batch, dim)
    )
    return _skip_and_gate(y, uf, D, z).to(u.dtype)


def _skip_and_gate(
    y: torch.Tensor, uf: torch.Tensor, D: torch.Tensor | None, z: torch.Tensor | None
) -> torch.Tensor:
    """The scan's output ``y`` plus the skip term ``D u``, gated by ``silu(z)``."""
    if D is not None and not torch.is_grad_enabled():
        # in place: y is ours, and a new (L, batch, D) costs its page faults
        y = y.addcmul_(uf, D.float())
    elif D is not None:
        # not in place: on a view of the scan's output, autograd's backward
        # then copies the gradient (a training step's scans 10-20 % slower)
        y = torch.addcmul(y, uf, D.float())
    if z is not None:
        y = y * F.silu(z.float())
    return y


def _core_and_step_sizes(core, A, delta, delta_bias, softplus):
    """``(core, d)``: the fused ``core`` only where every decay ``d * A`` is
    sure to be <= 0 (its exp2 is for decays; softplus makes ``d`` positive),
    else ``None`` (the blocked scan); ``d`` by that core's ``step_sizes``."""
    if core is not None and bool((A > 0).any()):
        core = None  # a growing state
    d = (_step_sizes if core is None else core.step_sizes)(delta, delta_bias, softplus)
    if core is not None and not softplus and bool((d < 0).any()):
        core = None
    return core, d


def _row_split(per: int, nstate: int, slab: int, groups: int, fused: bool) -> int:
    """Into how many rows each group's ``per`` channels are split.

    The blocked scan splits wide groups so that one row's state
    (``nstate x P``) fits its slab; the fused kernels, which share rows out
    over threads, also split until every thread has a row (keeping rows of
    at least 32 channels, the kernels' vector loops).
    """
    split = 1
    if nstate * per > slab:
        split = next(
            s for s in range(1, per + 1) if per % s == 0 and nstate * per // s <= slab
        )
    if fused:
        while (
            groups * split < torch.get_num_threads()
            and per % (2 * split) == 0
            and per // (2 * split) >= 32
        ):
            split *= 2
    return split


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """``(batch, ..., L)`` -> ``(L, batch, ...)``, by 2-D transposes, which
    are several times faster than a general permute copy on CPU."""
    if x.shape[0] == 1:
        flat = x.reshape(math.prod(x.shape[:-1]), x.shape[-1]).t().contiguous()
        return flat.view(x.shape[-1], 1, *x.shape[1:-1])
    return x.movedim(-1, 0).contiguous()


def _channels_first(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_time_major` for ``(L, batch, D)``."""
    if y.shape[1] == 1:
        return y[:, 0].t().contiguous()[None]
    return y.permute(1, 2, 0).contiguous()
