"""The ``"reference"`` selective-scan backend: mamba-ssm's own loop, ported.

A module of its own because it is the yardstick, not a backend anyone
should run for speed: tests and benchmarks measure the fast backends
(``scan_torch.py``, ``scan_triton.py``, mamba-ssm) against it, so it is
kept apart from them and as naive as the original.  ``backend="reference"``
of :func:`napari_vmunet.model.scan.selective_scan` runs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Port of mamba-ssm's ``selective_scan_ref`` (real ``A`` only).

    Kept deliberately naive -- same einsums, same full-size ``deltaA`` and
    ``deltaB_u`` tensors, same per-step loop -- so that it *is* the
    reference the fast backends and the benchmarks are measured against.
    One difference: float64 inputs are computed in float64 (mamba-ssm
    computes everything in float32), so tests have a float64 ground truth.
    """
    dtype_in = u.dtype
    work = torch.promote_types(dtype_in, torch.float32)
    u = u.to(work)
    delta = delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(work)
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    is_variable_B = B.dim() >= 3
    is_variable_C = C.dim() >= 3
    B = B.to(work)
    C = C.to(work)
    x = u.new_zeros((batch, dim, dstate))
    deltaA = torch.exp(torch.einsum('bdl,dn->bdln', delta, A.to(work)))
    if not is_variable_B:
        deltaB_u = torch.einsum('bdl,dn,bdl->bdln', delta, B, u)
    elif B.dim() == 3:
        deltaB_u = torch.einsum('bdl,bnl,bdl->bdln', delta, B, u)
    else:
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        deltaB_u = torch.einsum('bdl,bdnl,bdl->bdln', delta, B, u)
    if is_variable_C and C.dim() == 4:
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        if not is_variable_C:
            y = torch.einsum('bdn,dn->bd', x, C)
        elif C.dim() == 3:
            y = torch.einsum('bdn,bn->bd', x, C[:, :, i])
        else:
            y = torch.einsum('bdn,bdn->bd', x, C[:, :, :, i])
        ys.append(y)
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None].to(work)
    if z is not None:
        out = out * F.silu(z.to(work))
    return out.to(dtype_in)
