"""Initialising VM-UNet from ImageNet VMamba-S (v0) weights, as the original
``VMUNet.load_from`` does -- encoder *and* decoder -- without downloading
anything and without running code from the file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from ..model import VMUNet
from ._errors import CheckpointError
from ._io import check_file, sniff, torch_load
from ._state import PREFIX, clean_state_dict, describe_architecture

_STAGE = re.compile(r'^layers\.(\d+)\.(.*)$')
# names that only newer VMamba releases (v2/v3 layout) use
_NEW_VMAMBA = re.compile(r'(^patch_embed\.\d|\.blocks\.\d+\.(norm|op)\.|^classifier\.)')


def load_vmamba_pretrained(model: VMUNet, path: str | os.PathLike) -> dict:
    """Copy VMamba-S v0 ImageNet weights into ``model`` (in place) and report.

    Reads ``ckpt['model']`` of the VMamba file (a flat state dict also works)
    with ``weights_only=True``.  Encoder tensors are copied by identical name;
    decoder tensors come from the encoder stage of the same width,
    ``layers.{0,1,2,3}`` -> ``layers_up.{3,2,1,0}``, keeping the block index
    where the decoder stage has that block.  Everything else stays randomly
    initialised (for the default model: the three ``upsample`` expansions,
    ``final_up`` and ``final_conv``, 14 tensors).

    All or nothing: if any matched tensor has another shape (the model's
    widths, ``d_state`` or input channels differ from VMamba-S) a
    :class:`CheckpointError` explains it and the model is left unchanged.

    Returns ``{'encoder': n, 'decoder': m, 'not_initialised': [model keys],
    'unused': k, 'path': str}`` -- for the default config 117, 91, 14 keys and
    329 unused file tensors (the 25 extra blocks of stage 2 and the
    classifier head).
    """
    path = Path(path).expanduser()
    net = getattr(model, 'module', model)
    if not isinstance(net, VMUNet):
        raise TypeError(f'expected a VMUNet, got {type(model).__name__}')
    check_file(path)
    weights = _vmamba_state_dict(torch_load(path, sniff(path)), path)
    target = net.vmunet.state_dict()
    encoder = {k: v for k, v in weights.items() if k in target}
    decoder = _decoder_matches(weights, target, len(net.vmunet.layers_up))
    _check_shapes(path, net, target, {**encoder, **decoder}, weights)
    with torch.no_grad():
        for k, v in encoder.items():
            target[k].copy_(v)
        for k, (_, v) in decoder.items():
            target[k].copy_(v)
    used_file_keys = set(encoder) | {src for src, _ in decoder.values()}
    return {
        'encoder': len(encoder),
        'decoder': len(decoder),
        'not_initialised': [
            PREFIX + k for k in target if k not in encoder and k not in decoder
        ],
        'unused': len(set(weights) - used_file_keys),
        'path': str(path),
    }


def _vmamba_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """``ckpt['model']`` (VMamba's training script) or a flat state dict."""
    if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
        obj = obj['model']
    try:
        sd = clean_state_dict(obj)
    except CheckpointError as err:
        raise CheckpointError(
            f'is not a VMamba checkpoint (the file {err.problem})', path
        ) from err
    if any(k.startswith(PREFIX) for k in sd):
        raise CheckpointError(
            'is a complete VM-UNet checkpoint, not ImageNet VMamba weights; '
            'open it with load_checkpoint (or fine-tune from it) instead',
            path,
        )
    if any(_NEW_VMAMBA.search(k) for k in sd):
        raise CheckpointError(
            'holds weights of a newer VMamba release (v2/v3 layout: '
            'patch_embed.0, blocks.*.norm/op, classifier.*), which do not fit '
            "VM-UNet; use VMamba's v0 VMamba-S file "
            '(vmamba_small_e238_ema.pth, released as '
            'vssmsmall_dp03_ckpt_epoch_238.pth)',
            path,
        )
    if 'patch_embed.proj.weight' not in sd or not any(_STAGE.match(k) for k in sd):
        raise CheckpointError(
            'is not a VMamba v0 checkpoint: it has no patch_embed.proj.weight '
            'and layers.* tensors; use the VMamba-S file '
            '(vmamba_small_e238_ema.pth)',
            path,
        )
    return sd


def _decoder_matches(
    weights: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], n: int
) -> dict[str, tuple[str, torch.Tensor]]:
    """Decoder key -> (file key, tensor), via stage ``i`` -> ``n - 1 - i``.

    The renamed ``downsample`` keys and blocks the decoder does not have find
    no target and are skipped, as in the original.
    """
    out = {}
    for key, value in weights.items():
        m = _STAGE.match(key)
        if not m:
            continue
        new = f'layers_up.{n - 1 - int(m.group(1))}.{m.group(2)}'
        if new in target:
            out[new] = (key, value)
    return out


def _check_shapes(
    path: Path,
    net: VMUNet,
    target: Mapping[str, torch.Tensor],
    matches: Mapping[str, object],
    weights: Mapping[str, torch.Tensor],
) -> None:
    """All-or-nothing shape check before anything is copied."""
    if not matches:
        raise CheckpointError(
            'shares no tensor names with VM-UNet, so it is not VMamba v0 weights '
            '(patch_embed.proj, layers.i.blocks.j.*); use the VMamba-S file',
            path,
        )
    wrong = []
    for key, value in matches.items():
        tensor = value[1] if isinstance(value, tuple) else value
        if tensor.shape != target[key].shape:
            wrong.append(
                f'{key} is {list(tensor.shape)} in the file but '
                f'{list(target[key].shape)} in the model'
            )
    if wrong:
        width = weights['patch_embed.proj.weight'].shape
        more = f' (and {len(wrong) - 2} more)' if len(wrong) > 2 else ''
        raise CheckpointError(
            f'does not fit this model: {len(wrong)} tensor(s) differ in shape, '
            f'e.g. {"; ".join(wrong[:2])}{more}. These VMamba weights have '
            f'width {width[0]} and {width[1]} input channels; the model has '
            f'{describe_architecture(net.config)}. Build the model with the '
            'VMamba-S widths (dims 96/192/384/768, d_state 16, 3 input '
            'channels), or train it from scratch without pretrained weights. '
            'Nothing was copied',
            path,
        )
