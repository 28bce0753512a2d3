"""The selective scan (Mamba S6) that sits at the heart of every SS2D block.

Semantics are those of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:

    delta <- softplus(delta + delta_bias)            (each step optional)
    x_t   =  exp(delta_t * A) * x_{t-1} + delta_t * B_t * u_t
    y_t   =  <x_t, C_t> + D * u_t ;  out = y * silu(z)

with ``u, delta: (batch, D, L)``, ``A: (D, N)``, ``B, C`` either time-invariant
``(D, N)``, variable ``(batch, N, L)`` or grouped ``(batch, G, N, L)`` (channel
``d`` uses group ``d // (D / G)``).

The backends:

* ``"reference"`` -- a line-by-line port of mamba-ssm's ``selective_scan_ref``
  (materialises ``(batch, D, L, N)`` tensors).  Slow; the ground truth of tests
  and benchmarks.
* ``"torch"`` -- our fast pure-PyTorch scan (:class:`BlockedSelectiveScan`).
  The time axis is walked in blocks of ``block`` steps: per block, ``exp(dA)``
  and ``dB*u`` are written into small reused buffers that stay in cache, the
  recurrence is one in-place ``addcmul_`` per step and the read-out is one
  batched matmul.  Nothing ``(L, N)``-sized is ever allocated.  The backward
  pass is hand-written: it keeps only the state at each block boundary and
  recomputes a block's states when it needs them, so training memory is
  O(L / block) states instead of O(L).  It only ever exponentiates
  non-positive numbers (``delta >= 0``, ``A < 0``), so it cannot overflow,
  unlike log-decay ``cumsum``/divide chunking.
* ``"numba"`` -- our fused CPU kernels (``scan_numba.py``), forward and
  backward: one pass per time step over a cache-resident state, compiled by
  numba's own LLVM (no C compiler) on first use and cached on disk.  On an
  AVX2 CPU its forward is 2.0-2.2x the torch scan's speed per VM-UNet stage
  (``benchmarks/scan.py``, time-major).  Same rows, same checkpointed
  backward; decays that could be positive (``A > 0``, or ``delta < 0``
  without softplus) go to the torch scan, which handles any sign.
* ``"triton"`` -- our fused Triton kernels (``scan_triton.py``), forward and
  backward, for CUDA tensors: nothing to compile or install beyond the
  triton that PyTorch's CUDA wheels ship.  Also runs CPU tensors under
  ``TRITON_INTERPRET=1`` (slowly; that is how the CI tests check it).
* ``"mamba"`` -- mamba-ssm's CUDA kernel, imported lazily and only for CUDA
  tensors.

triton (which mamba-ssm imports too) is imported only when a CUDA tensor
first needs it, never at napari start-up and never on CPU paths: its LLVM
clashes with Mesa's once a napari viewer has drawn, so the import is made
with ``RTLD_DEEPBIND`` when Mesa's LLVM is already loaded.

``"auto"`` picks ``numba`` on CPUs, or ``torch`` where numba does not
import.  On CUDA it picks ``triton`` when it imports and passes a one-time
self-check against the torch backend on a tiny input (forward and
gradients), ``mamba`` instead when mamba-ssm is installed and measured
faster here, and ``torch`` otherwise, with a warning that says why.
:func:`backend_reason` tells the user which backend runs and why.

Each backend has its module: the reference ``scan_reference.py``, the
torch scan ``scan_torch.py``, the numba kernels ``_scan_numba_kernels.py``
with their threads and autograd in ``scan_numba.py``, the Triton kernels
``_triton_kernels.py`` with their launch and autograd in ``scan_triton.py``.
This one is the choice between them and the dispatch, and it re-exports
what lived here before that split (the reference, the torch scan's
constants and parts), so ``from napari_vmunet.model.scan import ...`` keeps working.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from typing import Literal

import torch

from .. import _scan_warmup
from .scan_reference import selective_scan_reference

# the dispatch calls three of these; the rest lived here before the split and
# stay importable from here (tests and benchmarks read them): re-exports
from .scan_torch import (  # noqa: F401
    BLOCK_FLOATS,
    DEFAULT_BLOCK,
    DEFAULT_SLAB,
    GPU_BLOCK,
    GPU_SLAB,
    LOG2E,
    MAX_BLOCK,
    BlockedSelectiveScan,
    _block_states,
    _channels_first,
    _decay_base,
    _scan_time_major,
    _time_major,
    block_and_slab,
)

Backend = Literal['auto', 'torch', 'numba', 'reference', 'mamba', 'triton']
BACKENDS = ('auto', 'torch', 'numba', 'reference', 'mamba', 'triton')


class MambaUnavailableError(RuntimeError):
    """Raised when the mamba-ssm CUDA kernel is requested but cannot be used."""


class TritonUnavailableError(RuntimeError):
    """Raised when the Triton scan is requested but cannot be used."""


# --------------------------------------------------------------------------
# mamba-ssm CUDA kernel
# --------------------------------------------------------------------------
@functools.cache
def _load_mamba_kernel():
    """Import mamba-ssm's CUDA ``selective_scan_fn`` once, or explain why not."""
    if not torch.cuda.is_available():
        raise MambaUnavailableError(
            'the mamba-ssm kernel needs a CUDA GPU; none is available '
            '(use backend="torch")'
        )
    try:
        from mamba_ssm.ops import selective_scan_interface
    except Exception as err:  # ImportError, or a broken CUDA build
        raise MambaUnavailableError(
            'mamba-ssm is not usable here '
            f'({type(err).__name__}: {err}). Install it with '
            '`pip install "napari-vmunet[cuda]"` on a CUDA machine, or use '
            'backend="triton" or "torch".'
        ) from err
    # newer mamba-ssm imports without its Mamba-1 kernel and fails at the call
    if getattr(selective_scan_interface, 'selective_scan_cuda', True) is None:
        raise MambaUnavailableError(
            'mamba-ssm is installed without its Mamba-1 kernel '
            '(selective_scan_cuda): newer mamba-ssm builds it only when installed '
            'with MAMBA_KEEP_CUDA_BUILD=TRUE; or use backend="triton" or "torch".'
        )
    return selective_scan_interface.selective_scan_fn


def mamba_available() -> bool:
    """True when mamba-ssm's CUDA kernel can be used on this machine."""
    try:
        _load_mamba_kernel()
    except MambaUnavailableError:
        return False
    return True


# --------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------
def _triton_interpreting() -> bool:
    return os.environ.get('TRITON_INTERPRET', '0') not in ('', '0')


def _mesa_llvm_loaded() -> bool:
    """Whether an LLVM-based GL driver (Mesa llvmpipe/gallium) is mapped.

    Then a plain ``import triton`` would bind triton's LLVM symbols to
    Mesa's and crash; unreadable maps count as loaded (the safe side).
    """
    try:
        with open('/proc/self/maps', encoding='utf-8', errors='replace') as f:
            maps = f.read()
    except OSError:
        return True
    return 'libLLVM' in maps or 'libgallium' in maps


def _import_triton() -> None:
    """``import triton``, surviving a napari viewer's OpenGL context.

    With Mesa's LLVM already in the process (any viewer that has drawn,
    e.g. under Xvfb) a plain import segfaults.  Loading triton's libraries
    with ``RTLD_DEEPBIND`` makes them resolve their own symbols first; the
    process-wide flags are restored right after.
    """
    if 'triton' in sys.modules:
        return
    deep = getattr(os, 'RTLD_DEEPBIND', 0)
    if not deep or not sys.platform.startswith('linux') or not _mesa_llvm_loaded():
        import triton  # noqa: F401

        return
    old = sys.getdlopenflags()
    sys.setdlopenflags(old | deep)
    try:
        import triton  # noqa: F401
    finally:
        sys.setdlopenflags(old)


@functools.cache
def load_triton_backend():
    """Import the Triton scan module once, or explain why it cannot run."""
    if not torch.cuda.is_available() and not _triton_interpreting():
        raise TritonUnavailableError(
            'the triton scan needs a CUDA GPU; none is available (use '
            'backend="torch", or set TRITON_INTERPRET=1 before the first scan '
            'to run it slowly on the CPU for testing)'
        )
    try:
        _import_triton()
        from . import scan_triton
    except Exception as err:  # ImportError, or a triton that does not fit torch
        raise TritonUnavailableError(
            f'triton is not usable here ({type(err).__name__}: {err}). It ships '
            'with the CUDA builds of PyTorch on Linux (`pip install triton`; '
            '`triton-windows` on Windows); or use backend="torch".'
        ) from err
    return scan_triton


def triton_self_check(device: torch.device | str) -> str | None:
    """Run the Triton scan on a tiny input on ``device`` against the torch
    backend, forward and every gradient.

    Returns ``None`` when it agrees (normalised error <= 1e-4), else why
    not.  A GPU or driver that Triton cannot compile for fails here with
    its own message instead of in the middle of a user's prediction.
    """
    device = torch.device(device)
    try:
        load_triton_backend()
        g = torch.Generator().manual_seed(0)
        batch, dim, groups, length, nstate = 2, 24, 4, 37, 16
        base = dict(
            u=torch.randn(batch, dim, length, generator=g),
            delta=0.5 * torch.randn(batch, dim, length, generator=g) - 1,
            A=-torch.rand(dim, nstate, generator=g) * 8 - 0.5,
            B=torch.randn(batch, groups, nstate, length, generator=g),
            C=torch.randn(batch, groups, nstate, length, generator=g),
            D=torch.randn(dim, generator=g),
            z=torch.randn(batch, dim, length, generator=g),
            delta_bias=0.5 * torch.randn(dim, generator=g),
        )
        gy = torch.randn(batch, dim, length, generator=g).to(device)
        results = []
        with torch.inference_mode(False), torch.enable_grad():
            for name in ('triton', 'torch'):
                x = {k: v.to(device).requires_grad_() for k, v in base.items()}
                y = selective_scan(**x, delta_softplus=True, backend=name)
                y.backward(gy)
                results.append([y.detach()] + [x[k].grad for k in base])
        for key, got, want in zip(['y', *base], *results, strict=True):
            err = (got - want).abs().max() / want.abs().max().clamp_min(1e-30)
            if not torch.isfinite(err) or err > 1e-4:
                return f'self-check: {key} differs from the torch backend ({err:.1e})'
    except Exception as err:  # noqa: BLE001 - any failure means "do not use it"
        return f'{type(err).__name__}: {err}'
    return None


def _time_scan(backend: str, device: torch.device) -> float:
    """Seconds for one forward of a VM-UNet stage-2-sized scan."""
    g = torch.Generator().manual_seed(0)
    x = dict(
        u=torch.randn(1, 1536, 1024, generator=g),
        delta=torch.randn(1, 1536, 1024, generator=g) - 3,
        A=-torch.rand(1536, 16, generator=g) - 0.5,
        B=torch.randn(1, 4, 16, 1024, generator=g),
        C=torch.randn(1, 4, 16, 1024, generator=g),
        D=torch.ones(1536),
    )
    x = {k: v.to(device) for k, v in x.items()}
    with torch.no_grad():
        selective_scan(**x, delta_softplus=True, backend=backend)
        torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(3):
            selective_scan(**x, delta_softplus=True, backend=backend)
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t) / 3


@functools.cache
def _auto_cuda(device: torch.device) -> tuple[str, str]:
    """``(backend, why)`` for ``"auto"`` on one CUDA device, decided once."""
    problem = triton_self_check(device)
    mamba = mamba_available()
    if problem is None and mamba:
        try:
            t_triton, t_mamba = (
                _time_scan('triton', device),
                _time_scan('mamba', device),
            )
        except Exception as err:  # noqa: BLE001 - a broken mamba-ssm build
            return (
                'triton',
                f'triton kernels passed the self-check; mamba-ssm failed ({err})',
            )
        if t_mamba < t_triton:
            return 'mamba', (
                f'mamba-ssm measured faster than triton here '
                f'({1e3 * t_mamba:.2f} vs {1e3 * t_triton:.2f} ms)'
            )
        return 'triton', (
            f'triton measured faster than mamba-ssm here '
            f'({1e3 * t_triton:.2f} vs {1e3 * t_mamba:.2f} ms)'
        )
    if problem is None:
        return 'triton', 'triton kernels passed their self-check on this GPU'
    fallback = 'mamba' if mamba else 'torch'
    warnings.warn(
        f'the triton scan cannot be used on {device} ({problem}); using the '
        f'{fallback} backend, which is slower',
        RuntimeWarning,
        stacklevel=3,
    )
    return fallback, f'triton unusable ({problem})'


def _cuda_key(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.device('cuda', index)


def backend_reason(device: torch.device | str) -> tuple[str, str]:
    """``(backend, why)``: what ``"auto"`` runs on ``device`` and why.

    On CUDA this may run the one-time Triton self-check (a fraction of a
    second); on CPUs it never imports triton.
    """
    device = torch.device(device)
    if device.type == 'cuda':
        return _auto_cuda(_cuda_key(device))
    if device.type == 'cpu':
        if _scan_warmup.running():
            return 'torch', (
                'the numba kernels are being compiled in the background (once '
                'per installation); the pure-PyTorch scan runs meanwhile'
            )
        return _auto_cpu()
    return 'torch', f'the pure-PyTorch scan runs on {device.type} devices'


@functools.cache
def _auto_cpu() -> tuple[str, str]:
    """``(backend, why)`` for ``"auto"`` on CPUs, decided once: the numba
    kernels when they import and compile (from numba's disk cache, after
    the first time: a fraction of a second), else the torch scan."""
    from .scan_numba import NumbaUnavailableError, warm_up

    try:
        warm_up()
    except NumbaUnavailableError as err:
        return 'torch', f'the pure-PyTorch scan runs ({err})'
    except Exception as err:  # noqa: BLE001 - an LLVM that cannot build them here
        warnings.warn(
            f'the numba scan kernels do not compile here ({type(err).__name__}: '
            f'{err}); using the pure-PyTorch scan, which is slower',
            RuntimeWarning,
            stacklevel=3,
        )
        return 'torch', f'the numba kernels do not compile here ({err})'
    return 'numba', 'the fused numba kernels run on CPUs'


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The concrete backend ``"auto"`` stands for on ``device``."""
    if backend not in BACKENDS:
        raise ValueError(f'unknown scan backend {backend!r}; use one of {BACKENDS}')
    if backend != 'auto':
        return backend
    return backend_reason(device)[0]


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    backend: Backend = 'auto',
    *,
    time_major: bool = False,
    block: int | None = None,
    slab: int | None = None,
) -> torch.Tensor:
    """Selective scan with mamba-ssm's ``selective_scan_fn`` semantics.

    Shapes are mamba-ssm's (see the module docstring) and the result is
    ``(batch, D, L)`` in ``u``'s dtype.  With ``time_major=True`` the
    sequence axis comes first instead: ``u, delta, z`` and the result are
    ``(L, batch, D)`` and variable ``B, C`` are ``(L, batch, N)`` or
    ``(L, batch, G, N)``.  That is the fast backend's native layout, so
    SS2D builds its tensors that way and no transposes are needed.
    ``block`` is the torch backend's time block and the triton backend's
    chunk (a power of two); ``slab`` only concerns the torch backend.
    """
    name = resolve_backend(backend, u.device)
    scan = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    if name == 'triton':
        return _triton_scan(*scan, time_major=time_major, block=block)
    if name in ('torch', 'numba'):  # time-major is their native layout
        if not time_major:
            u, delta, B, C, z = _relayout(_time_major, u, delta, B, C, z)
        core = _numba_core(u) if name == 'numba' else None
        scan = (u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        y = _scan_time_major(*scan, block, slab, core=core)
        return y if time_major else _channels_first(y)
    if time_major:  # the other backends take mamba-ssm's layout
        u, delta, B, C, z = _relayout(_channels_first_any, u, delta, B, C, z)
        y = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, name)
        return y.permute(2, 0, 1)
    if name == 'mamba':
        if u.device.type != 'cuda':
            raise MambaUnavailableError(
                'the mamba-ssm kernel only runs on CUDA tensors; '
                f'got {u.device.type} tensors (use backend="torch")'
            )
        fn = _load_mamba_kernel()
        return fn(
            u.contiguous(),
            delta.contiguous(),
            A,
            B.contiguous(),
            C.contiguous(),
            D,
            z,
            delta_bias,
            delta_softplus,
        )
    return selective_scan_reference(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def _triton_scan(*scan, time_major: bool, block: int | None) -> torch.Tensor:
    """The triton backend on ``scan = (u, delta, A, B, C, D, z, delta_bias,
    delta_softplus)``."""
    if scan[0].device.type != 'cuda' and not _triton_interpreting():
        raise TritonUnavailableError(
            f'the triton scan runs on CUDA tensors; got {scan[0].device.type} '
            'tensors (use backend="torch", or set TRITON_INTERPRET=1 before '
            'the first scan to run it slowly on the CPU for testing)'
        )
    return load_triton_backend().selective_scan_triton(
        *scan, time_major=time_major, block_l=block
    )


def _numba_core(u: torch.Tensor):
    """The numba scan's autograd function, for ``u``'s device."""
    from .scan_numba import NumbaSelectiveScan, NumbaUnavailableError, load_kernels

    if u.device.type != 'cpu':
        raise NumbaUnavailableError(
            f'the numba scan runs on CPU tensors; got {u.device.type} tensors '
            '(use backend="auto")'
        )
    load_kernels()
    return NumbaSelectiveScan


def _channels_first_any(x: torch.Tensor) -> torch.Tensor:
    """``(L, batch, ...)`` -> ``(batch, ..., L)`` (a view)."""
    return x.movedim(0, -1)


def _relayout(to, u, delta, B, C, z):
    """``u, delta, B, C, z`` moved to another layout by ``to``: the
    sequence tensors, which are all but a time-invariant ``B``/``C`` and a
    missing ``z``."""
    return (
        to(u),
        to(delta),
        B if B.dim() == 2 else to(B),
        C if C.dim() == 2 else to(C),
        None if z is None else to(z),
    )
