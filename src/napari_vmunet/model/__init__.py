"""VM-UNet modules and the selective-scan backends (pure PyTorch)."""

from .scan import (
    BACKENDS,
    MambaUnavailableError,
    TritonUnavailableError,
    backend_reason,
    mamba_available,
    resolve_backend,
    selective_scan,
    selective_scan_reference,
)
from .vmunet import SS2D, VSSM, VMUNet

__all__ = [
    'BACKENDS',
    'SS2D',
    'VMUNet',
    'VSSM',
    'MambaUnavailableError',
    'TritonUnavailableError',
    'backend_reason',
    'mamba_available',
    'resolve_backend',
    'selective_scan',
    'selective_scan_reference',
]
