"""Choosing a compute device and describing the machine to the user.

Users of peer tools lose hours to "is my GPU used?" (cellpose #899, #916)
and Apple-silicon surprises (napari-segment-anything #21).  So the device
is explicit (``auto`` only picks cuda -> mps -> cpu) and
:func:`diagnostics` says in one line what torch sees.
"""

from __future__ import annotations

import os
import platform

import torch

DEVICE_CHOICES = ('auto', 'cpu', 'cuda', 'mps')


def mps_available() -> bool:
    backend = getattr(torch.backends, 'mps', None)
    return bool(backend and backend.is_available())


def available_devices() -> list[str]:
    """Device names usable here, in the order ``auto`` prefers them."""
    names = [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    if mps_available():
        names.append('mps')
    return [*names, 'cpu']


def resolve_device(device: str | torch.device = 'auto') -> torch.device:
    """``'auto'`` -> cuda, else mps, else cpu; anything else is checked.

    Raises ``ValueError`` with the usable choices when the device cannot be
    used here (rather than failing later inside the model).
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or 'auto').strip().lower()
    if name == 'auto':
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(name)
    except RuntimeError as err:
        raise ValueError(
            f'unknown device {device!r}; use one of {", ".join(DEVICE_CHOICES)}'
        ) from err
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(
                'CUDA was requested but torch sees no CUDA GPU '
                f'(torch {torch.__version__}, CUDA build: {torch.version.cuda}); '
                'install a CUDA build of torch or choose device "cpu"'
            )
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(
                f'{name} requested but only {torch.cuda.device_count()} GPU(s) '
                'are visible'
            )
    elif dev.type == 'mps' and not mps_available():
        raise ValueError(
            'Apple MPS was requested but is not available here '
            '(needs Apple silicon, macOS 12.3+ and an MPS build of torch); '
            'choose device "cpu"'
        )
    elif dev.type not in ('cpu', 'cuda', 'mps'):
        raise ValueError(f'unsupported device {name!r}; use cpu, cuda or mps')
    return dev


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (GPU memory for CUDA, RAM otherwise)."""
    if device.type == 'cuda':
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        pages = os.sysconf('SC_AVPHYS_PAGES')
        return int(pages * os.sysconf('SC_PAGE_SIZE'))
    except (ValueError, OSError, AttributeError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    if device.type == 'mps':
        return f'Apple MPS ({platform.machine()})'
    return platform.processor() or platform.machine() or 'CPU'


def diagnostics(device: str | torch.device = 'auto') -> dict:
    """What torch sees: versions, devices, free memory, the scan backend."""
    from .model.scan import backend_reason

    info: dict = {
        'torch': torch.__version__,
        'cuda_available': torch.cuda.is_available(),
        'cuda_build': torch.version.cuda,
        'mps_available': mps_available(),
        'cpu_threads': torch.get_num_threads(),
    }
    try:
        dev = resolve_device(device)
    except ValueError as err:
        info['error'] = str(err)
        dev = torch.device('cpu')
    info['device'] = str(dev)
    info['device_name'] = device_name(dev)
    info['free_memory_bytes'] = free_memory_bytes(dev)
    # on CUDA this runs the triton scan's one-time self-check
    info['scan_backend'], info['scan_backend_reason'] = backend_reason(dev)
    return info


def format_diagnostics(info: dict) -> str:
    """One line for the dock and ``napari-vmunet info --system``."""
    free = info.get('free_memory_bytes')
    free_txt = f'{free / 2**30:.1f} GiB free' if free else 'free memory unknown'
    parts = [
        f'torch {info["torch"]}',
        f'{info["device"]} ({info["device_name"]}, {free_txt})',
        f'CUDA {"yes" if info["cuda_available"] else "no"}',
        f'MPS {"yes" if info["mps_available"] else "no"}',
        f'scan: {info["scan_backend"]}'
        + (
            f' ({info["scan_backend_reason"]})'
            if info.get('scan_backend_reason')
            else ''
        ),
    ]
    if 'error' in info:
        parts.append(info['error'])
    return ' | '.join(parts)
