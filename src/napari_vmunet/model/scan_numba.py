"""The ``"numba"`` selective-scan backend: fused CPU kernels, with autograd.

The default on CPUs when numba imports (it is a dependency; a machine where
it does not import runs the ``"torch"`` scan instead).  The kernels
(:mod:`._scan_numba_kernels`) fuse the whole recurrence into one pass per
time step; numba compiles them with its own LLVM, so nothing needs a C
compiler, and caches the machine code on disk after the first use (about
11 s for all four kernels on a 2-core AVX2 EPYC, once per installation;
a process then loads them in under a second).

:class:`NumbaSelectiveScan` has the signature of
:class:`~napari_vmunet.model.scan_torch.BlockedSelectiveScan` and the same
row layout, so :func:`~napari_vmunet.model.scan_torch._scan_time_major`
runs either.  Its backward keeps the forward's state every ``block`` steps
and recomputes the rest, like the torch scan.  Rows are shared out over
``torch.get_num_threads()`` threads (the kernels release the GIL), so
``torch.set_num_threads`` governs both backends.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ThreadPoolExecutor

import torch

from .gc_pause import gc_paused
from .scan_torch import LOG2E, _step_sizes

#: floats of recomputed states and decays the backward keeps per row and
#: block (``2 x block x N x P``): about a 512 KB L2 cache
BLOCK_FLOATS = 131072
MIN_BLOCK, MAX_BLOCK = 4, 64


class NumbaUnavailableError(RuntimeError):
    """Raised when the numba scan is requested but numba cannot be imported."""


@functools.cache
def load_kernels():
    """Import (and on first use, compile) the kernels, or explain why not."""
    try:
        from . import _scan_numba_kernels
    except Exception as err:  # ImportError, or a numba that does not fit numpy
        raise NumbaUnavailableError(
            f'numba is not usable here ({type(err).__name__}: {err}); '
            '`pip install numba` for the fast CPU scan, or use backend="torch"'
        ) from err
    return _scan_numba_kernels


def warm_up() -> None:
    """Compile every kernel (or load it from numba's disk cache) on a tiny
    scan, forward and backward; see :mod:`napari_vmunet._scan_warmup`."""
    from .scan import selective_scan

    g = torch.Generator().manual_seed(0)
    # tensors made in here are ordinary ones even when the caller predicts
    # in inference mode, and so can carry gradients
    with torch.inference_mode(False), torch.enable_grad():
        x = dict(
            u=torch.randn(1, 64, 9, generator=g),
            delta=torch.randn(1, 64, 9, generator=g),
            A=-torch.rand(64, 16, generator=g) - 0.5,
            B=torch.randn(1, 2, 16, 9, generator=g),
            C=torch.randn(1, 2, 16, 9, generator=g),
            delta_bias=torch.randn(64, generator=g),
        )
        leaves = {k: v.requires_grad_() for k, v in x.items()}
        y = selective_scan(**leaves, delta_softplus=True, backend='numba')
        y.sum().backward()


def checkpoint_block(nstate: int, per: int) -> int:
    """Steps between the states the forward keeps for the backward."""
    return max(MIN_BLOCK, min(MAX_BLOCK, BLOCK_FLOATS // (2 * nstate * per)))


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix='vmunet-scan')


if hasattr(os, 'register_at_fork'):  # a forked child has none of the threads
    os.register_at_fork(after_in_child=_pool.cache_clear)


def _over_rows(kernel, rows: int, *args) -> None:
    """``kernel(*args, r0, r1)`` over all rows, shared out over threads."""
    workers = max(1, min(rows, torch.get_num_threads()))
    bounds = [rows * i // workers for i in range(workers + 1)]
    jobs = [
        _pool().submit(kernel, *args, r0, r1)
        for r0, r1 in zip(bounds[1:-1], bounds[2:], strict=True)
    ]
    kernel(*args, bounds[0], bounds[1])  # the first share on this thread
    for job in jobs:
        job.result()


def _np(t: torch.Tensor):
    return t.detach().numpy()


class NumbaSoftplus(torch.autograd.Function):
    """``softplus(delta + bias)`` on ``delta (M, D)``, ``bias (D)`` (float32),
    by the kernels: on an AVX2 CPU 4.1 ms against torch's 10.4 for 3 M
    elements, one thread."""

    @staticmethod
    def forward(ctx, delta, bias):
        out = torch.empty_like(delta)
        kernels = load_kernels()
        _over_rows(
            kernels._softplus_kernel, delta.shape[0], _np(delta), _np(bias), _np(out)
        )
        ctx.save_for_backward(delta, bias)
        return out

    @staticmethod
    def backward(ctx, g):
        delta, bias = ctx.saved_tensors
        g_delta = torch.empty_like(delta)
        _over_rows(
            load_kernels()._softplus_bwd_kernel,
            delta.shape[0],
            *map(_np, (delta, bias, g.contiguous(), g_delta)),
        )
        g_bias = g_delta.sum(0) if ctx.needs_input_grad[1] else None
        return g_delta, g_bias


def step_sizes(
    delta: torch.Tensor, delta_bias: torch.Tensor | None, softplus: bool
) -> torch.Tensor:
    """``softplus(delta + delta_bias)`` in float32 (each part optional), the
    softplus by the kernels; ``delta`` is ``(..., D)``."""
    if not softplus:
        return _step_sizes(delta, delta_bias, softplus)
    d = delta.float()
    bias = d.new_zeros(d.shape[-1]) if delta_bias is None else delta_bias.float()
    bias = bias.contiguous()
    rows = math.prod(d.shape[:-1])  # (not -1: that fails on empty tensors)
    flat = NumbaSoftplus.apply(d.reshape(rows, d.shape[-1]).contiguous(), bias)
    return flat.view(d.shape)


class NumbaSelectiveScan(torch.autograd.Function):
    """The scan on rows, by the numba kernels.

    Arguments and result as :class:`BlockedSelectiveScan` (``slab`` is not
    used; ``block`` is the backward's checkpoint interval, ``None`` for
    :func:`checkpoint_block`).  The decays must be non-positive
    (``d >= 0``, ``A <= 0``), which the caller checks.  :func:`step_sizes`
    computes ``d`` for it.
    """

    step_sizes = staticmethod(step_sizes)

    @staticmethod
    @gc_paused
    def forward(ctx, u, d, A, B, C, block, slab):
        kernels = load_kernels()
        length, rows, per = u.shape
        nstate = A.shape[1]
        block = int(block or checkpoint_block(nstate, per))
        A2 = A * LOG2E  # the kernels' exp(x) is 2**(x log2 e)
        save = any(ctx.needs_input_grad[:5])
        nblocks = -(-length // block) if save else 0
        saved = u.new_empty(nblocks, rows, nstate, per)
        y = u.new_empty(length, rows, per)
        _over_rows(
            kernels._fwd_kernel,
            rows,
            *map(_np, (u, d, A2, B, C, y, saved)),
            block,
        )
        if save:
            ctx.save_for_backward(u, d, A, A2, B, C, saved)
            ctx.block = block
        return y

    @staticmethod
    @gc_paused
    def backward(ctx, gy):
        u, d, A, A2, B, C, saved = ctx.saved_tensors
        rows = u.shape[1]
        grads = tuple(torch.empty_like(t) for t in (u, d, A, B, C))
        _over_rows(
            load_kernels()._bwd_kernel,
            rows,
            *map(_np, (u, d, A, A2, B, C, gy.contiguous(), saved)),
            ctx.block,
            *map(_np, grads),
        )
        return *grads, None, None
