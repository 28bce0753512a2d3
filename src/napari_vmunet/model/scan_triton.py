"""The ``"triton"`` selective-scan backend: one fused kernel forward, one backward.

Imported only through :func:`napari_vmunet.model.scan.load_triton_backend`,
never at package import: ``import triton`` next to an existing Mesa OpenGL
context (a napari viewer) crashes the process unless it is made with
``RTLD_DEEPBIND``, and CPU users never need it.

Semantics are those of :func:`napari_vmunet.model.scan.selective_scan`
(mamba-ssm's ``selective_scan_fn``).  The kernels see every tensor through
strides -- ``u, delta, z, out`` as ``(batch, D, L)`` and ``B, C`` as
``(batch, G, N, L)`` -- so mamba-ssm's channel-first layout and SS2D's
time-major layout ``(L, batch, D)`` / ``(L, batch, G, N)`` run the same
code with no transposes.

How the forward works.  One program owns ``BLOCK_D`` channels of one
``(batch, group)`` pair and its ``(BLOCK_D, N)`` state, which stays in
registers in fp32 whatever the input dtype.  It walks the sequence in
chunks of ``BLOCK_L`` steps: per chunk it loads ``u, delta`` and the
group's ``B_t, C_t`` as tiles, forms ``a = exp(delta*A)`` (``delta >= 0``
after softplus and ``A <= 0``: only non-positive numbers are
exponentiated) and ``b = delta*u*B``, and solves the chunk's recurrence
``x_t = a_t x_{t-1} + b_t`` with ``tl.associative_scan`` on the pairs
``(a, b)`` -- a product of decays <= 1 and sums, so it cannot overflow,
unlike the log-decay cumsum/divide trick.  The carried state enters as
``x = b_cum + a_cum * h``.  Read-out with ``C``, the ``D*u`` skip and the
``silu(z)`` gate happen in the same pass: nothing of size
``(batch, D, L, N)`` is ever allocated.

How the backward works.  The forward saves the state at each chunk
start, ``(batch, L / BLOCK_L, D, N)``, so training memory grows as
``L / chunk``.  The backward walks the chunks in reverse: it recomputes
the chunk's states from the saved start state, then solves the adjoint
recurrence ``g_t = a_{t+1} g_{t+1} + C_t gy_t`` with a reverse
associative scan (``a_{t+1}`` comes from a tile loaded one step later).
With ``a_t x_{t-1} = x_t - b_t`` no division by a decay is ever needed.
The ``B`` and ``C`` gradients are sums over the channels of a group: each
program writes its own partial sums and torch adds them afterwards, so
there are no atomics and no races, and results are deterministic.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

#: Forward tile: time steps per chunk, widest channel block per program,
#: warps (``None``: one warp per 1024 tile elements, 2 to 8).  Not yet tuned
#: on a GPU (none was available when this was written): chosen so that the
#: kernels compile for sm_80 and sm_90 without register spills (sm_90
#: ptxas: forward 142-154 registers, backward 182-246, fp32 and bf16;
#: ``python benchmarks/triton_compile.py``).
#: ``benchmarks/gpu_check.py`` sweeps alternatives.
FWD_BLOCK_L = 32
FWD_BLOCK_D = 16
FWD_WARPS: int | None = None
#: The backward keeps about three times as many tiles live, so smaller ones.
BWD_BLOCK_D = 4
BWD_WARPS = 8
#: Channel blocks are narrowed (down to 4) until the grid has this many
#: programs: the sequence is walked one chunk after another inside a
#: program, so one image at stage 1 (D = 768 in 4 groups) would otherwise
#: occupy a third of a 132-SM GPU.
MIN_PROGRAMS = 264


@triton.jit
def _combine(a1, b1, a2, b2):
    """``x -> a2 * (a1 * x + b1) + b2``: compose two affine steps.

    With ``reverse=True`` Triton passes the later accumulation first, which
    composes the adjoint recurrence in the right order with the same code.
    """
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _softplus(x):
    """``log(1 + e^x)`` without overflow and exact for very negative ``x``.

    ``max(x, 0) + log1p(e^-|x|)``, with ``log1p`` by Goldberg's trick
    (``log(w) * t / (w - 1)``), since not every Triton target has it.
    """
    t = tl.exp(-tl.abs(x))
    w = 1.0 + t
    lp = tl.where(w == 1.0, t, tl.log(w) * t / (w - 1.0))
    return tl.maximum(x, 0.0) + lp


@triton.jit
def _fwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    out_ptr,
    states_ptr,
    L,
    PER,
    N,
    RATIO_B,
    RATIO_C,
    NCHUNK,
    DTOT,
    s_ub,
    s_ud,
    s_ul,
    s_db,
    s_dd,
    s_dl,
    s_zb,
    s_zd,
    s_zl,
    s_ob,
    s_od,
    s_ol,
    s_Ad,
    s_An,
    s_Bb,
    s_Bg,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cg,
    s_Cn,
    s_Cl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    SAVE_STATES: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_blk = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    j = pid_blk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = j < PER
    d = pid_g * PER + j
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    tt = tl.arange(0, BLOCK_L)

    A = tl.load(
        A_ptr + d[:, None] * s_Ad + n[None, :] * s_An,
        mask=dmask[:, None] & nmask[None, :],
        other=0.0,
    ).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    u_base = u_ptr + pid_b * s_ub + d[None, :] * s_ud
    dt_base = dt_ptr + pid_b * s_db + d[None, :] * s_dd
    o_base = out_ptr + pid_b * s_ob + d[None, :] * s_od
    z_base = z_ptr + pid_b * s_zb + d[None, :] * s_zd
    B_base = B_ptr + pid_b * s_Bb + (pid_g // RATIO_B) * s_Bg + n[None, :] * s_Bn
    C_base = C_ptr + pid_b * s_Cb + (pid_g // RATIO_C) * s_Cg + n[None, :] * s_Cn
    st_base = states_ptr + pid_b * NCHUNK * DTOT * BLOCK_N + d[:, None] * BLOCK_N + n

    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    for c in range(NCHUNK):
        t = c * BLOCK_L + tt
        tmask = t < L
        m2 = tmask[:, None] & dmask[None, :]
        mn = tmask[:, None] & nmask[None, :]
        if SAVE_STATES:
            tl.store(st_base + c * DTOT * BLOCK_N, h, mask=dmask[:, None])
        u = tl.load(u_base + t[:, None] * s_ul, mask=m2, other=0.0).to(tl.float32)
        dt = tl.load(dt_base + t[:, None] * s_dl, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dt += bias[None, :]
        if SOFTPLUS:
            dt = _softplus(dt)
        dt = tl.where(m2, dt, 0.0)  # padding: a = 1, b = 0 carries the state
        Bt = tl.load(B_base + t[:, None] * s_Bl, mask=mn, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_Cl, mask=mn, other=0.0).to(tl.float32)
        a = tl.exp(dt[:, :, None] * A[None, :, :])
        b = (dt * u)[:, :, None] * Bt[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        x = b_cum + a_cum * h[None, :, :]
        y = tl.sum(x * Ct[:, None, :], axis=2)
        if HAS_D:
            y += u * Dv[None, :]
        if HAS_Z:
            zt = tl.load(z_base + t[:, None] * s_zl, mask=m2, other=0.0).to(tl.float32)
            y *= zt * tl.sigmoid(zt)
        tl.store(o_base + t[:, None] * s_ol, y, mask=m2)
        h = tl.sum(tl.where((tt == BLOCK_L - 1)[:, None, None], x, 0.0), axis=0)


@triton.jit
def _bwd_kernel(
    u_ptr,
    dt_ptr,
    A_ptr,
    B_ptr,
    C_ptr,
    D_ptr,
    z_ptr,
    bias_ptr,
    states_ptr,
    go_ptr,
    gu_ptr,
    gdt_ptr,
    gz_ptr,
    gA_ptr,
    gB_ptr,
    gC_ptr,
    gD_ptr,
    gbias_ptr,
    L,
    PER,
    N,
    RATIO_B,
    RATIO_C,
    NCHUNK,
    DTOT,
    NBLK,
    s_ub,
    s_ud,
    s_ul,
    s_db,
    s_dd,
    s_dl,
    s_zb,
    s_zd,
    s_zl,
    s_gob,
    s_god,
    s_gol,
    s_gub,
    s_gud,
    s_gul,
    s_gdb,
    s_gdd,
    s_gdl,
    s_gzb,
    s_gzd,
    s_gzl,
    s_Ad,
    s_An,
    s_Bb,
    s_Bg,
    s_Bn,
    s_Bl,
    s_Cb,
    s_Cg,
    s_Cn,
    s_Cl,
    HAS_D: tl.constexpr,
    HAS_Z: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_blk = tl.program_id(0)
    pid_g = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    j = pid_blk * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = j < PER
    d = pid_g * PER + j
    n = tl.arange(0, BLOCK_N)
    nmask = n < N
    tt = tl.arange(0, BLOCK_L)

    A = tl.load(
        A_ptr + d[:, None] * s_Ad + n[None, :] * s_An,
        mask=dmask[:, None] & nmask[None, :],
        other=0.0,
    ).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + d, mask=dmask, other=0.0).to(tl.float32)
    u_base = u_ptr + pid_b * s_ub + d[None, :] * s_ud
    dt_base = dt_ptr + pid_b * s_db + d[None, :] * s_dd
    z_base = z_ptr + pid_b * s_zb + d[None, :] * s_zd
    go_base = go_ptr + pid_b * s_gob + d[None, :] * s_god
    gu_base = gu_ptr + pid_b * s_gub + d[None, :] * s_gud
    gdt_base = gdt_ptr + pid_b * s_gdb + d[None, :] * s_gdd
    gz_base = gz_ptr + pid_b * s_gzb + d[None, :] * s_gzd
    B_base = B_ptr + pid_b * s_Bb + (pid_g // RATIO_B) * s_Bg + n[None, :] * s_Bn
    C_base = C_ptr + pid_b * s_Cb + (pid_g // RATIO_C) * s_Cg + n[None, :] * s_Cn
    st_base = states_ptr + pid_b * NCHUNK * DTOT * BLOCK_N + d[:, None] * BLOCK_N + n
    # partial sums over this program's channels: (batch, G, NBLK, L, BLOCK_N)
    part = ((pid_b * (DTOT // PER) + pid_g) * NBLK + pid_blk) * L * BLOCK_N
    gB_base = gB_ptr + part + n[None, :]
    gC_base = gC_ptr + part + n[None, :]

    carry = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # adjoint g at chunk end + 1
    gA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    gD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    gbias = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for ci in range(NCHUNK):
        c = NCHUNK - 1 - ci
        t = c * BLOCK_L + tt
        tmask = t < L
        m2 = tmask[:, None] & dmask[None, :]
        mn = tmask[:, None] & nmask[None, :]
        u = tl.load(u_base + t[:, None] * s_ul, mask=m2, other=0.0).to(tl.float32)
        raw = tl.load(dt_base + t[:, None] * s_dl, mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            raw += bias[None, :]
        dt = raw
        if SOFTPLUS:
            dt = _softplus(raw)
        dt = tl.where(m2, dt, 0.0)
        # decay of the next step, a_{t+1}: the same tile one step later
        t1 = t + 1
        m2n = (t1 < L)[:, None] & dmask[None, :]
        dtn = tl.load(dt_base + t1[:, None] * s_dl, mask=m2n, other=0.0).to(tl.float32)
        if HAS_BIAS:
            dtn += bias[None, :]
        if SOFTPLUS:
            dtn = _softplus(dtn)
        dtn = tl.where(m2n, dtn, 0.0)
        Bt = tl.load(B_base + t[:, None] * s_Bl, mask=mn, other=0.0).to(tl.float32)
        Ct = tl.load(C_base + t[:, None] * s_Cl, mask=mn, other=0.0).to(tl.float32)
        go = tl.load(go_base + t[:, None] * s_gol, mask=m2, other=0.0).to(tl.float32)

        # recompute the chunk's states from its saved start state
        h0 = tl.load(st_base + c * DTOT * BLOCK_N, mask=dmask[:, None], other=0.0)
        a = tl.exp(dt[:, :, None] * A[None, :, :])
        b = (dt * u)[:, :, None] * Bt[:, None, :]
        a_cum, b_cum = tl.associative_scan((a, b), 0, _combine)
        x = b_cum + a_cum * h0[None, :, :]

        if HAS_Z:
            zt = tl.load(z_base + t[:, None] * s_zl, mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zt)
            y = tl.sum(x * Ct[:, None, :], axis=2)
            if HAS_D:
                y += u * Dv[None, :]
            gz = go * y * sz * (1.0 + zt * (1.0 - sz))
            tl.store(gz_base + t[:, None] * s_gzl, gz, mask=m2)
            gy = go * zt * sz
        else:
            gy = go

        # adjoint states: g_t = a_{t+1} g_{t+1} + C_t gy_t, reverse scan
        an = tl.exp(dtn[:, :, None] * A[None, :, :])
        cg = gy[:, :, None] * Ct[:, None, :]
        an_cum, g_cum = tl.associative_scan((an, cg), 0, _combine, reverse=True)
        g = g_cum + an_cum * carry[None, :, :]
        carry = tl.sum(tl.where((tt == 0)[:, None, None], g, 0.0), axis=0)

        # gradients; a_t x_{t-1} = x_t - b_t
        gB_t = tl.sum(g * (dt * u)[:, :, None], axis=1)
        gC_t = tl.sum(x * gy[:, :, None], axis=1)
        tl.store(gB_base + t[:, None] * BLOCK_N, gB_t, mask=mn)
        tl.store(gC_base + t[:, None] * BLOCK_N, gC_t, mask=mn)
        gBu = tl.sum(g * Bt[:, None, :], axis=2)  # sum_n g B
        decay = g * (x - b)
        gA += tl.sum(decay * dt[:, :, None], axis=0)
        gdt = gBu * u + tl.sum(decay * A[None, :, :], axis=2)
        gu = gBu * dt
        if HAS_D:
            gu += gy * Dv[None, :]
            gD += tl.sum(gy * u, axis=0)
        if SOFTPLUS:
            gdt = gdt * tl.sigmoid(raw)
        gdt = tl.where(m2, gdt, 0.0)
        gbias += tl.sum(gdt, axis=0)
        tl.store(gu_base + t[:, None] * s_gul, gu, mask=m2)
        tl.store(gdt_base + t[:, None] * s_gdl, gdt, mask=m2)

    row = pid_b * DTOT + d
    tl.store(gA_ptr + row[:, None] * BLOCK_N + n[None, :], gA, mask=dmask[:, None])
    tl.store(gD_ptr + row, gD, mask=dmask)
    tl.store(gbias_ptr + row, gbias, mask=dmask)


def interpreting() -> bool:
    """True when Triton runs kernels on the CPU through its interpreter."""
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


def _vectorise_interpreter_scan() -> bool:
    """Make the interpreter's ``tl.associative_scan`` step whole slices.

    Triton's interpreter (``TRITON_INTERPRET=1``, how the CPU tests run
    these kernels) applies a custom scan's combine function once per
    *element* -- about 0.3 ms each, minutes for one small backward.  The
    combine is element-wise, so applying it to whole slices along the
    scan axis, in the same sequential order, gives the same numbers.  This
    replaces only that fallback (``ScanOps.generic_scan``) and only when
    the interpreter is on; if a Triton release renames it, the slow path
    stays and everything still works.
    """
    try:
        import numpy as np
        from triton.runtime.interpreter import ScanOps
    except ImportError:
        return False
    if getattr(ScanOps.generic_scan, '_vmunet', False):
        return True

    def generic_scan(self, inputs):
        data = [arg.handle.data for arg in inputs]
        outs = [np.empty_like(x) for x in data]
        ax = self.axis
        acc = None
        for i in range(data[0].shape[ax]):
            where = (slice(None),) * ax + (i,)
            cur = tuple(
                self.to_tensor(x[where], arg.dtype)
                for x, arg in zip(data, inputs, strict=True)
            )
            if acc is None:
                acc = cur
            else:
                ret = self.combine_fn.fn(*acc, *cur)
                acc = ret if isinstance(ret, tuple) else (ret,)
            for o, a in zip(outs, acc, strict=True):
                o[where] = a.handle.data
        return [
            self.to_tensor(o, arg.dtype) for o, arg in zip(outs, inputs, strict=True)
        ]

    generic_scan._vmunet = True
    ScanOps.generic_scan = generic_scan
    return True


if interpreting():
    _vectorise_interpreter_scan()


def _block_d(per: int, cap: int, others: int) -> int:
    """Channels per program: a power of two, no wider than the group needs,
    narrowed while the grid (``others`` programs per channel block) is
    smaller than ``MIN_PROGRAMS``."""
    bd = max(1, min(cap, triton.next_power_of_2(per)))
    while bd > 4 and triton.cdiv(per, bd) * others < MIN_PROGRAMS:
        bd //= 2
    return bd


def _fwd_warps(block_l: int, block_d: int, block_n: int) -> int:
    if FWD_WARPS:
        return FWD_WARPS
    return max(2, min(8, block_l * block_d * block_n // 1024))


class TritonSelectiveScan(torch.autograd.Function):
    """Autograd wrapper of the two kernels on logical views.

    ``u, delta`` and ``z`` are ``(batch, D, L)`` and ``B, C``
    ``(batch, G, N, L)`` with any strides (time-major tensors arrive as
    permuted views); the output has ``u``'s memory layout and dtype.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, softplus, groups, block_l):
        batch, dtot, length = u.shape
        nstate = A.shape[1]
        per = dtot // groups
        block_n = triton.next_power_of_2(nstate)
        block_d = _block_d(per, FWD_BLOCK_D, groups * batch)
        nblk = triton.cdiv(per, block_d)
        nchunk = triton.cdiv(length, block_l)
        save = any(ctx.needs_input_grad[:8])
        out = torch.empty_like(u)
        states = (
            u.new_empty((batch, nchunk, dtot, block_n), dtype=torch.float32)
            if save
            else u.new_empty(1, dtype=torch.float32)
        )
        zz = z if z is not None else u
        _fwd_kernel[(nblk, groups, batch)](
            u,
            delta,
            A,
            B,
            C,
            D if D is not None else u,
            zz,
            delta_bias if delta_bias is not None else u,
            out,
            states,
            length,
            per,
            nstate,
            groups // B.shape[1],
            groups // C.shape[1],
            nchunk,
            dtot,
            *u.stride(),
            *delta.stride(),
            *zz.stride(),
            *out.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=bool(softplus),
            SAVE_STATES=save,
            BLOCK_L=block_l,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            num_warps=_fwd_warps(block_l, block_d, block_n),
        )
        if save:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
            ctx.softplus, ctx.groups, ctx.block_l = bool(softplus), groups, block_l
        return out

    @staticmethod
    def backward(ctx, gout):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        groups, block_l = ctx.groups, ctx.block_l
        batch, dtot, length = u.shape
        nstate = A.shape[1]
        per = dtot // groups
        block_n = triton.next_power_of_2(nstate)
        block_d = _block_d(per, BWD_BLOCK_D, groups * batch)
        nblk = triton.cdiv(per, block_d)
        nchunk = states.shape[1]
        f32 = torch.float32
        g_u = torch.empty_like(u)
        g_dt = torch.empty_like(delta)
        g_z = torch.empty_like(z) if z is not None else None
        part = (batch, groups, nblk, length, block_n)
        g_Bp = u.new_empty(part, dtype=f32)
        g_Cp = u.new_empty(part, dtype=f32)
        g_A = u.new_empty((batch, dtot, block_n), dtype=f32)
        g_D = u.new_empty((batch, dtot), dtype=f32)
        g_bias = u.new_empty((batch, dtot), dtype=f32)
        zz = z if z is not None else u
        gzz = g_z if g_z is not None else u
        _bwd_kernel[(nblk, groups, batch)](
            u,
            delta,
            A,
            B,
            C,
            D if D is not None else u,
            zz,
            delta_bias if delta_bias is not None else u,
            states,
            gout,
            g_u,
            g_dt,
            gzz,
            g_A,
            g_Bp,
            g_Cp,
            g_D,
            g_bias,
            length,
            per,
            nstate,
            groups // B.shape[1],
            groups // C.shape[1],
            nchunk,
            dtot,
            nblk,
            *u.stride(),
            *delta.stride(),
            *zz.stride(),
            *gout.stride(),
            *g_u.stride(),
            *g_dt.stride(),
            *gzz.stride(),
            *A.stride(),
            *B.stride(),
            *C.stride(),
            HAS_D=D is not None,
            HAS_Z=z is not None,
            HAS_BIAS=delta_bias is not None,
            SOFTPLUS=ctx.softplus,
            BLOCK_L=block_l,
            BLOCK_D=block_d,
            BLOCK_N=block_n,
            num_warps=BWD_WARPS,
        )

        def group_sum(part: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
            # (batch, G, nblk, L, Np) -> M's (batch, G_M, N, L)
            s = part.sum(2)[..., :nstate]
            s = s.view(batch, M.shape[1], groups // M.shape[1], length, nstate).sum(2)
            return s.transpose(-1, -2).to(M.dtype)

        g_A = g_A.sum(0)[:, :nstate].to(A.dtype)
        return (
            g_u,
            g_dt,
            g_A,
            group_sum(g_Bp, B),
            group_sum(g_Cp, C),
            None if D is None else g_D.sum(0).to(D.dtype),
            g_z,
            None if delta_bias is None else g_bias.sum(0).to(delta_bias.dtype),
            None,
            None,
            None,
        )


def selective_scan_triton(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    *,
    time_major: bool = False,
    block_l: int | None = None,
) -> torch.Tensor:
    """The scan on the Triton kernels; shapes as in ``selective_scan``.

    ``block_l`` (a power of two) is the chunk: time steps solved at once
    by the associative scan and the spacing of the states the backward
    keeps.
    """
    if A.is_complex():
        raise NotImplementedError('complex A is not supported by the triton backend')
    block_l = int(block_l or FWD_BLOCK_L)
    if block_l < 2 or block_l & (block_l - 1):
        raise ValueError(f'block_l must be a power of two >= 2, got {block_l}')
    if time_major:  # (L, batch, ...) -> logical (batch, ..., L) views, no copies
        u, delta = u.movedim(0, -1), delta.movedim(0, -1)
        z = None if z is None else z.movedim(0, -1)
        B = B if B.dim() == 2 else B.movedim(0, -1)
        C = C if C.dim() == 2 else C.movedim(0, -1)
    batch, dtot, length = u.shape
    nstate = A.shape[1]

    def grouped(M: torch.Tensor, name: str) -> torch.Tensor:
        if M.dim() == 2:  # time-invariant (D, N): one group per channel
            return M[None, :, :, None].expand(batch, dtot, nstate, length)
        if M.dim() == 3:
            M = M[:, None]
        if M.shape != (batch, M.shape[1], nstate, length) or dtot % M.shape[1]:
            raise ValueError(
                f'{name} has shape {tuple(M.shape)}; expected (batch, [G,] N, L) '
                f'with batch={batch}, N={nstate}, L={length} and G dividing D={dtot}'
            )
        return M

    B, C = grouped(B, 'B'), grouped(C, 'C')
    gb, gc = B.shape[1], C.shape[1]
    groups = max(gb, gc)
    if groups % min(gb, gc):
        raise ValueError(
            f'B has {gb} groups and C {gc}: one count must divide the other'
        )
    if u.shape != delta.shape or (z is not None and z.shape != u.shape):
        raise ValueError(
            f'u {tuple(u.shape)}, delta {tuple(delta.shape)}'
            + ('' if z is None else f' and z {tuple(z.shape)}')
            + ' must have the same shape'
        )
    out = TritonSelectiveScan.apply(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, groups, block_l
    )
    return out.movedim(-1, 0) if time_major else out
