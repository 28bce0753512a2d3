"""State dicts: cleaning what other tools add, reading the architecture off
tensor shapes, and strict loading with messages a user can act on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from ..model import VMUNet
from ..model.gc_pause import GC_PAUSE
from ._errors import CheckpointError
from ._metadata import ARCH_KEYS

PREFIX = 'vmunet.'
#: buffers that ``thop.profile`` leaves on modules (original ``train.py``)
THOP_KEYS = ('total_ops', 'total_params')
#: prefixes of wrappers: DataParallel / DDP (``module.``), ``torch.compile``
WRAPPER_PREFIXES = ('module.', '_orig_mod.')
_LIST = 3  # how many names a message lists before "and N more"


def is_thop_key(key: str) -> bool:
    """``total_ops`` / ``total_params``, bare or as the last name component."""
    return key.rsplit('.', 1)[-1] in THOP_KEYS


def clean_state_dict(state_dict: Any) -> dict[str, torch.Tensor]:
    """The tensors of ``state_dict`` under their VM-UNet names.

    Drops thop's ``total_ops``/``total_params`` buffers (176 of them in every
    ISIC ``best.pth``), strips ``module.`` (DataParallel/DDP) and
    ``_orig_mod.`` (torch.compile) when *every* key carries it, and names a
    bare ``VSSM`` state dict (saved from ``model.vmunet``) ``vmunet.*``.
    """
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f'holds a {type(state_dict).__name__}, not a state dict of named tensors'
        )
    bad_keys = [k for k in state_dict if not isinstance(k, str)]
    if bad_keys:
        raise CheckpointError(
            f'is not a state dict: it has non-text keys such as {bad_keys[0]!r}'
        )
    sd = {k: v for k, v in state_dict.items() if not is_thop_key(k)}
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f'is not a state dict of tensors: {key!r} holds a '
                f'{type(value).__name__}'
            )
    stripped = True
    while sd and stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped = True
    if _looks_like_bare_vssm(sd):
        sd = {PREFIX + k: v for k, v in sd.items()}
    return sd


def _looks_like_bare_vssm(sd: Mapping[str, Any]) -> bool:
    return (
        'patch_embed.proj.weight' in sd
        and 'final_conv.weight' in sd
        and not any(k.startswith(PREFIX) for k in sd)
    )


def looks_like_vmamba(sd: Mapping[str, Any]) -> bool:
    """An ImageNet VMamba classifier: an encoder (``patch_embed``, ``layers``)
    without any decoder."""
    keys = [k for k in sd if isinstance(k, str)]
    return (
        any(k.startswith(('patch_embed.', 'layers.')) for k in keys)
        and not any(k.startswith(('layers_up.', 'final_conv.')) for k in keys)
        and not any(k.startswith(PREFIX) for k in keys)
    )


VMAMBA_NOT_A_MODEL = (
    'holds ImageNet VMamba backbone weights (an encoder without a decoder), not '
    'a trained VM-UNet; they can only initialise a new model before training: '
    'use napari_vmunet.checkpoint.load_vmamba_pretrained(model, path)'
)


def require_vmunet(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse, with a reason, state dicts that are not VM-UNet's."""
    if not sd:
        raise CheckpointError('contains no tensors, so there are no weights to load')
    if any(k.startswith(PREFIX) for k in sd):
        return
    if looks_like_vmamba(sd):
        raise CheckpointError(VMAMBA_NOT_A_MODEL)
    raise CheckpointError(
        f'is not a VM-UNet checkpoint: none of its {len(sd)} tensors is named '
        f'vmunet.* (it has {_first(list(sd))}), so it belongs to another '
        'network; pick the best.pth/latest.pth written by VM-UNet training or '
        'a .safetensors file written by napari-vmunet'
    )


# --------------------------------------------------------------------------
# architecture from shapes


def infer_config(state_dict: Mapping[str, Any]) -> dict:
    """The VMUNet keyword arguments that produce ``state_dict``'s tensors.

    Read from shapes alone, so any widths and depths work: ``input_channels``
    and ``dims[0]`` from ``patch_embed.proj``, each stage's width from its
    blocks' ``ln_1`` (or its down/upsampling norm), depths by counting blocks
    (highest index + 1, so a gap shows up as missing keys when loading),
    ``num_classes`` from ``final_conv`` and ``d_state`` from ``A_logs``.
    Accepts the same layouts as :func:`clean_state_dict`.
    """
    sd = clean_state_dict(state_dict)
    require_vmunet(sd)
    shapes = {
        k[len(PREFIX) :]: tuple(v.shape) for k, v in sd.items() if k.startswith(PREFIX)
    }
    proj = _shape(shapes, 'patch_embed.proj.weight', ndim=4)
    dims, depths = _stages(shapes, 'layers', first_width=proj[0])
    dims_decoder, depths_decoder = _stages(shapes, 'layers_up', first_width=None)
    if 'final_conv.bias' in shapes:
        num_classes = _shape(shapes, 'final_conv.bias', ndim=1)[0]
    else:
        num_classes = _shape(shapes, 'final_conv.weight', ndim=4)[0]
    a_logs = [s for k, s in shapes.items() if k.endswith('self_attention.A_logs')]
    if not a_logs or len(a_logs[0]) != 2:
        raise CheckpointError(
            'has no usable self_attention.A_logs tensor, so the state size '
            '(d_state) cannot be read; the file is incomplete'
        )
    config = {
        'num_classes': num_classes,
        'input_channels': proj[1],
        'depths': depths,
        'depths_decoder': depths_decoder,
        'dims': dims,
        'dims_decoder': dims_decoder,
        'd_state': a_logs[0][1],
    }
    return {k: config[k] for k in ARCH_KEYS}


def _shape(shapes: Mapping[str, tuple], key: str, ndim: int) -> tuple:
    if key not in shapes:
        raise CheckpointError(
            f'lacks {PREFIX}{key}, which VM-UNet always has; the file is '
            'incomplete or not a VM-UNet checkpoint'
        )
    shape = shapes[key]
    if len(shape) != ndim:
        raise CheckpointError(
            f'{PREFIX}{key} has shape {list(shape)}, expected {ndim} dimensions'
        )
    return shape


def _stages(
    shapes: Mapping[str, tuple], name: str, first_width: int | None
) -> tuple[list[int], list[int]]:
    """Widths and block counts of the encoder (``layers``) or decoder
    (``layers_up``) stages."""
    stage_re = re.compile(rf'^{name}\.(\d+)\.')
    block_re = re.compile(rf'^{name}\.(\d+)\.blocks\.(\d+)\.')
    stages = {int(m.group(1)) for k in shapes if (m := stage_re.match(k))}
    if not stages:
        raise CheckpointError(
            f'has no {PREFIX}{name}.* tensors, which VM-UNet always has; the '
            'file is incomplete or not a VM-UNet checkpoint'
        )
    depths = [0] * (max(stages) + 1)
    for k in shapes:
        if m := block_re.match(k):
            i, j = int(m.group(1)), int(m.group(2))
            depths[i] = max(depths[i], j + 1)
    dims = [_stage_width(shapes, name, i, first_width) for i in range(len(depths))]
    return dims, depths


def _stage_width(
    shapes: Mapping[str, tuple], name: str, i: int, first_width: int | None
) -> int:
    for k, s in shapes.items():
        if k.startswith(f'{name}.{i}.blocks.') and k.endswith('.ln_1.weight'):
            return s[0]
    if name == 'layers':
        norm = shapes.get(f'layers.{i}.downsample.norm.weight')
        if norm:
            return norm[0] // 4
        if i == 0 and first_width:
            return first_width
    else:
        norm = shapes.get(f'layers_up.{i}.upsample.norm.weight')
        if norm:
            return norm[0]
    raise CheckpointError(
        f'does not show the width of stage {PREFIX}{name}.{i} (no ln_1 or '
        'sampling norm tensors); the file is incomplete'
    )


# --------------------------------------------------------------------------
# building and strict loading


def build_model(config: Mapping[str, Any]) -> VMUNet:
    """A VMUNet for ``config`` without touching the global RNG.

    Construction draws random initial weights; forking the RNG keeps loading
    a checkpoint from changing the random stream of a seeded script.  The
    collector is paused meanwhile: every object made here is kept, and a
    full collection in napari's heap holds the GIL (and the viewer) for
    200-250 ms, measured while the dock loaded a model.
    """
    with torch.random.fork_rng(devices=[]), GC_PAUSE:
        return VMUNet(**config)


def describe_architecture(config: Mapping[str, Any]) -> str:
    """One line: ``dims 8/16/32/64, depths 2-2-2-2 / 2-2-2-1, ...``."""
    return (
        f'dims {"/".join(map(str, config["dims"]))}, '
        f'encoder depths {"-".join(map(str, config["depths"]))}, '
        f'decoder depths {"-".join(map(str, config["depths_decoder"]))}, '
        f'{config["num_classes"]} class(es), {config["input_channels"]} input '
        f'channel(s), d_state {config["d_state"]}'
    )


def mismatch_report(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
) -> str | None:
    """Why ``got`` does not fit a model whose state dict is ``expected``:
    wrong shapes, missing keys, unexpected keys, non-float tensors."""
    wrong = [
        f'{k} has shape {list(got[k].shape)}, expected {list(v.shape)}'
        for k, v in expected.items()
        if k in got and got[k].shape != v.shape
    ]
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    not_float = [
        f'{k} is {str(got[k].dtype).replace("torch.", "")}'
        for k in expected
        if k in got and not got[k].is_floating_point()
    ]
    parts = []
    if wrong:
        parts.append(
            wrong[0]
            if len(wrong) == 1
            else f'{len(wrong)} tensors have the wrong shape: {_first(wrong, "; ")}'
        )
    if missing:
        parts.append(f'missing {_count(missing, "key")}: {_first(missing)}')
    if unexpected:
        parts.append(f'{_count(unexpected, "unexpected key")}: {_first(unexpected)}')
    if not_float:
        parts.append(
            f'{_count(not_float, "tensor")} not floating point: {_first(not_float)}'
        )
    return '; '.join(parts) or None


def load_strict(
    config: Mapping[str, Any], sd: Mapping[str, torch.Tensor], source: str
) -> VMUNet:
    """Build the model for ``config`` and load ``sd`` into it, all or nothing.

    ``source`` says where ``config`` came from, for the message.
    """
    model = build_model(config)
    report = mismatch_report(model.state_dict(), sd)
    if report:
        raise CheckpointError(
            f'does not fit the VM-UNet {source} ({describe_architecture(config)}): '
            f'{report}. The file is incomplete, was edited, or was saved from a '
            'modified model; use the file written by training (best.pth, '
            'latest.pth or a napari-vmunet .safetensors)'
        )
    check_finite(sd)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def check_finite(sd: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights with NaN/inf: such a model only ever outputs NaN."""
    bad = [
        k
        for k, v in sd.items()
        if v.is_floating_point() and not torch.isfinite(v).all()
    ]
    if bad:
        raise CheckpointError(
            f'has NaN or infinite values in {_count(bad, "tensor")} '
            f'({_first(bad)}): the training run that wrote it diverged; use an '
            'earlier checkpoint (best.pth rather than latest.pth) or train again '
            'with a lower learning rate'
        )


def _count(items: list, noun: str) -> str:
    return f'{len(items)} {noun}{"" if len(items) == 1 else "s"}'


def _first(items: list, sep: str = ', ') -> str:
    shown = sep.join(items[:_LIST])
    return shown + (f' and {len(items) - _LIST} more' if len(items) > _LIST else '')
