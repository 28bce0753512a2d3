"""The ``"triton"`` backend's device code: the ``@triton.jit`` kernels.

Only the kernels, apart from their launch (``scan_triton.py``: tile sizes,
grids, the autograd wrapper), because they are a different kind of code --
Triton's restricted Python, compiled per GPU -- read and tuned on their
own (``benchmarks/triton_compile.py`` compiles them for sm_80/sm_90).
Imported only through ``scan_triton.py``, so never at package import.

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

import triton
import triton.language as tl


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
