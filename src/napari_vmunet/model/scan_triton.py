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

The kernels themselves, and how the forward and backward work, are in
``_triton_kernels.py``; this module launches them: tile sizes, grids,
the autograd wrapper and the interpreter shim the CPU tests need.
"""

from __future__ import annotations

import os

import torch
import triton

from ._triton_kernels import _bwd_kernel, _fwd_kernel

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
