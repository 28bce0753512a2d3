"""The fused CPU kernels of the ``"numba"`` scan backend (forward, backward).

Why hand-written: the eager ``"torch"`` scan walks each ``(T, N, P)`` block
about five times (decay, its ``exp``, input term, recurrence, read-out) and
pays PyTorch's few microseconds per operation on every time step; on an
AVX2 CPU that left it 2x slower than its own arithmetic (issue #18).  Here
one loop per time step does everything for a row's ``(N, P)`` state, which
stays in L1/L2 cache, and LLVM vectorises it over the ``P`` channels.

``exp`` is our own: numba's ``math.exp`` is a scalar libm call (LLVM only
vectorises it with Intel's SVML), which would cost more than the rest of
the kernel.  :func:`_exp2` is a Cody-Waite ``exp2`` for the decays, which
are never positive (``delta >= 0``, ``A <= 0``; the caller checks):
``2**x = 2**k * 2**f`` with ``k = round(x)``, a degree-7 Taylor polynomial
for ``2**f`` on ``|f| <= 1/2`` (truncation 5e-10, so the float32 rounding
of about 1e-7 dominates) and ``2**k`` put together from its exponent bits.
Below about ``2**-126`` (the smallest normal float32) it returns 0, as
float32 ``exp`` underflows there too (to subnormals); NaN stays
NaN.  Measured on an AVX2 EPYC: 0.32 ns per element, torch's ``exp2`` 0.63.

:func:`_softplus` (the step sizes) is built on it: ``max(x, 0) +
log1p(exp(-|x|))``, the ``log1p`` as ``2 atanh(e / (2 + e))`` by its series
(``e / (2 + e) <= 1/3``, seven terms: 1e-8), which has no cancellation for
small ``e``; torch's own softplus took 3.3 ns per element here, 12 of a
stage-1 forward scan's 95 ms under the profiler.

Layout (the rows of :class:`~napari_vmunet.model.scan_torch.BlockedSelectiveScan`):
``u, d, y (L, R, P)``, ``A (R, N, P)``, ``B, C (L, R, N)``, contiguous
float32; each kernel call runs rows ``r0 .. r1`` so that threads can share
the rows out (the kernels release the GIL).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_F = np.float32
#: ``ln(2)**k / k!``: the Taylor series of ``2**f``
_P1, _P2, _P3, _P4, _P5, _P6, _P7 = (
    _F(c)
    for c in (
        0.6931471805599453,
        0.2402265069591007,
        0.055504108664821576,
        0.009618129107628477,
        0.0013333558146428441,
        0.00015403530393381606,
        1.5252733804059838e-05,
    )
)
#: fused multiply-adds in the forward; the backward may also reorder its
#: sums over channels (which is what lets LLVM vectorise them)
_FORWARD_MATH = {'contract'}
# (and numpy's error model: a division by zero is inf, not a Python
# exception, whose check keeps LLVM from vectorising the loop)
_LOG2E = _F(1.4426950408889634)
_BACKWARD_MATH = {'contract', 'reassoc'}


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 ``bits`` (an LLVM bitcast)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return sig, codegen


@njit(inline='always', fastmath=_FORWARD_MATH, error_model='numpy')
def _exp2(x):
    """``2**x`` for ``x <= 0`` (see the module docstring)."""
    x = x if not (x < _F(-127.0)) else _F(-127.0)  # NaN passes through
    k = np.floor(x + _F(0.5))
    f = x - k
    p = _P6 + f * _P7
    p = _P5 + f * p
    p = _P4 + f * p
    p = _P3 + f * p
    p = _P2 + f * p
    p = _P1 + f * p
    p = _F(1.0) + f * p
    return p * _float_from_bits((np.int32(k) + np.int32(127)) << np.int32(23))


@njit(inline='always', fastmath=_FORWARD_MATH, error_model='numpy')
def _softplus(x):
    """``log(1 + exp(x))``."""
    e = _exp2(-abs(x) * _LOG2E)
    s = e / (_F(2.0) + e)
    s2 = s * s
    p = _F(1 / 11) + s2 * _F(1 / 13)
    p = _F(1 / 9) + s2 * p
    p = _F(1 / 7) + s2 * p
    p = _F(1 / 5) + s2 * p
    p = _F(1 / 3) + s2 * p
    p = _F(1.0) + s2 * p
    return (x if x > 0 else _F(0.0)) + _F(2.0) * s * p


@njit(nogil=True, cache=True, fastmath=_FORWARD_MATH, error_model='numpy')
def _softplus_kernel(x, bias, out, r0, r1):
    """``out = softplus(x + bias)`` for rows ``r0 .. r1`` of ``x (M, D)``."""
    for r in range(r0, r1):
        x_r, out_r = x[r], out[r]
        for c in range(x.shape[1]):
            out_r[c] = _softplus(x_r[c] + bias[c])


@njit(nogil=True, cache=True, fastmath=_FORWARD_MATH, error_model='numpy')
def _softplus_bwd_kernel(x, bias, g, gx, r0, r1):
    """``gx = g * sigmoid(x + bias)``, from ``e = exp(-|x + bias|)``."""
    for r in range(r0, r1):
        x_r, g_r, gx_r = x[r], g[r], gx[r]
        for c in range(x.shape[1]):
            v = x_r[c] + bias[c]
            e = _exp2(-abs(v) * _LOG2E)
            gx_r[c] = g_r[c] * (_F(1.0) if v > 0 else e) / (_F(1.0) + e)


@njit(nogil=True, cache=True, fastmath=_FORWARD_MATH, error_model='numpy')
def _fwd_kernel(u, d, A2, B, C, y, saved, block, r0, r1):
    """``y_t = <x_t, C_t>`` for rows ``r0 .. r1``; ``A2`` is ``A * log2(e)``.

    ``x_t = 2**(d_t A2) x_{t-1} + d_t u_t B_t``.  When ``saved`` has
    blocks, the state before every ``block``-th step goes there for the
    backward.
    """
    length, _, per = u.shape
    nstate = A2.shape[1]
    keep = saved.shape[0] > 0
    du = np.empty(per, dtype=np.float32)
    for r in range(r0, r1):
        x = np.zeros((nstate, per), dtype=np.float32)
        A_r = A2[r]
        for t in range(length):
            if keep and t % block == 0:
                saved[t // block, r] = x
            d_t, u_t, y_t, B_t, C_t = d[t, r], u[t, r], y[t, r], B[t, r], C[t, r]
            for p in range(per):
                du[p] = d_t[p] * u_t[p]
                y_t[p] = 0
            for n in range(nstate):
                b, c, x_n, A_n = B_t[n], C_t[n], x[n], A_r[n]
                for p in range(per):
                    xv = _exp2(d_t[p] * A_n[p]) * x_n[p] + du[p] * b
                    x_n[p] = xv
                    y_t[p] += c * xv


@njit(nogil=True, cache=True, fastmath=_BACKWARD_MATH, error_model='numpy')
def _bwd_kernel(u, d, A, A2, B, C, gy, saved, block, gu, gd, gA, gB, gC, r0, r1):
    """Every input's gradient for rows ``r0 .. r1``, from ``gy``.

    Block by block from the end: the block's states are recomputed from
    the saved start state (with their decays), then walked backwards with
    ``G_t = C_t gy_t + a_{t+1} G_{t+1}`` (``a_t = exp(d_t A)``), giving
    ``gC_t = sum_p gy_t x_t``, ``gB_t = sum_p G_t d_t u_t``, the input
    term ``S_t = sum_n G_t B_t`` (``gu = S d``, ``gd = S u + ...``) and the
    decay term ``G_t a_t x_{t-1}``, summed over ``n`` with ``A`` into
    ``gd`` and over time with ``d`` into ``gA``.
    """
    length, _, per = u.shape
    nstate = A.shape[1]
    nblocks = saved.shape[0]
    xs = np.empty((block + 1, nstate, per), dtype=np.float32)
    decay = np.empty((block, nstate, per), dtype=np.float32)
    du = np.empty((block, per), dtype=np.float32)
    S = np.empty(per, dtype=np.float32)
    g_dec = np.empty(per, dtype=np.float32)
    for r in range(r0, r1):
        carry = np.zeros((nstate, per), dtype=np.float32)  # a_{t+1} G_{t+1}
        gA_r = np.zeros((nstate, per), dtype=np.float32)
        A_r, A2_r = A[r], A2[r]
        for blk in range(nblocks - 1, -1, -1):
            t0 = blk * block
            steps = min(block, length - t0)
            xs[0] = saved[blk, r]
            for i in range(steps):  # recompute the block's states
                t = t0 + i
                d_t, u_t, B_t = d[t, r], u[t, r], B[t, r]
                for p in range(per):
                    du[i, p] = d_t[p] * u_t[p]
                for n in range(nstate):
                    b, A2_n = B_t[n], A2_r[n]
                    x_prev, x_next, a_n = xs[i, n], xs[i + 1, n], decay[i, n]
                    for p in range(per):
                        a = _exp2(d_t[p] * A2_n[p])
                        a_n[p] = a
                        x_next[p] = a * x_prev[p] + du[i, p] * b
            for i in range(steps - 1, -1, -1):  # and walk them backwards
                t = t0 + i
                d_t, gy_t, B_t, C_t = d[t, r], gy[t, r], B[t, r], C[t, r]
                du_t = du[i]
                for p in range(per):
                    S[p] = 0
                    g_dec[p] = 0
                for n in range(nstate):
                    b, c = B_t[n], C_t[n]
                    x_t, x_prev, a_n = xs[i + 1, n], xs[i, n], decay[i, n]
                    carry_n, gA_n, A_n = carry[n], gA_r[n], A_r[n]
                    acc_c = _F(0.0)
                    acc_b = _F(0.0)
                    for p in range(per):
                        g = carry_n[p] + c * gy_t[p]  # G_t
                        acc_c += gy_t[p] * x_t[p]
                        acc_b += g * du_t[p]
                        S[p] += b * g
                        ga = g * a_n[p]
                        X = ga * x_prev[p]
                        gA_n[p] += X * d_t[p]
                        g_dec[p] += X * A_n[p]
                        carry_n[p] = ga
                    gC[t, r, n] = acc_c
                    gB[t, r, n] = acc_b
                u_t, gu_t, gd_t = u[t, r], gu[t, r], gd[t, r]
                for p in range(per):
                    gu_t[p] = S[p] * d_t[p]
                    gd_t[p] = S[p] * u_t[p] + g_dec[p]
        gA[r] = gA_r
