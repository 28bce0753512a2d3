"""Where a run's weights come from: a checkpoint, ImageNet VMamba-S, or none.

The result carries the metadata the new checkpoint inherits (class names,
normalisation, tile size) and plain-language notes about anything that was
not simply copied, e.g. a ``final_conv`` re-initialised for another number
of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import load_checkpoint, load_vmamba_pretrained
from ..model import VMUNet
from .config import VMAMBA_PREFIX, TrainConfig

#: the model head, re-initialised when the number of classes changes
HEAD = 'vmunet.final_conv.'


@dataclass
class InitialModel:
    model: VMUNet
    description: str  # provenance.initialized_from
    metadata: dict | None = None  # of the checkpoint it came from
    notes: list[str] = field(default_factory=list)


def initial_model(
    config: TrainConfig, data_channels: int | None = None
) -> InitialModel:
    """Build the model ``config.init`` asks for (see :class:`TrainConfig`).

    ``data_channels``: the input channels the data suggests, used for a
    new model when ``config.input_channels`` is not set.  Model construction
    draws from torch's global RNG, which the trainer has seeded.
    """
    init = config.init
    if init is None:
        model = _new_model(config, data_channels)
        with torch.no_grad():  # as if trained on 0-1 inputs (TrainConfig)
            model.vmunet.patch_embed.proj.weight.mul_(config.input_scale)
        return InitialModel(model, 'scratch (random weights)')
    if init.startswith(VMAMBA_PREFIX):
        return _from_vmamba(config, Path(init[len(VMAMBA_PREFIX) :]).expanduser())
    return _from_checkpoint(config, Path(init).expanduser())


def _new_model(config: TrainConfig, data_channels: int | None) -> VMUNet:
    channels = config.input_channels or data_channels or 3
    return VMUNet(
        num_classes=config.num_classes or 1,
        input_channels=channels,
        **config.scratch_options,
    )


def _from_vmamba(config: TrainConfig, path: Path) -> InitialModel:
    model = _new_model(config, None if config.input_channels else 3)
    report = load_vmamba_pretrained(model, path)
    note = (
        f'ImageNet VMamba weights from {path.name}: {report["encoder"]} encoder '
        f'and {report["decoder"]} decoder tensors copied, '
        f'{len(report["not_initialised"])} left random (upsampling and head)'
    )
    return InitialModel(model, f'vmamba:{path}', notes=[note])


def _from_checkpoint(config: TrainConfig, path: Path) -> InitialModel:
    ckpt = load_checkpoint(path)
    given = {
        k: v
        for k, v in config.scratch_options.items()
        if k != 'drop_path_rate' and list(_as_list(v)) != _as_list(ckpt.config[k])
    }
    if given:
        what = ', '.join(f'{k}={v}' for k, v in given.items())
        raise ValueError(
            f'{what} differs from the checkpoint {path.name} '
            f'({", ".join(f"{k}={ckpt.config[k]}" for k in given)}); architecture '
            'options only apply when training from scratch (no init)'
        )
    channels = ckpt.config['input_channels']
    if config.input_channels and config.input_channels != channels:
        raise ValueError(
            f'the checkpoint {path.name} takes {channels} input channel(s), not '
            f'{config.input_channels}; map your channels onto its inputs '
            '(channel map) or train from scratch'
        )
    model, metadata, notes = ckpt.model, ckpt.metadata, []
    old = ckpt.config['num_classes']
    new = config.num_classes or old
    if new != old:
        model = _new_head(ckpt.model, new)
        metadata = None  # the class names belong to the old head
        notes.append(
            f'final_conv re-initialised: {path.name} predicts {old} class(es), '
            f'this model {new}; all other weights come from the checkpoint'
        )
    if config.drop_path_rate is not None:
        set_drop_path(model, config.drop_path_rate)
    model.train()
    return InitialModel(model, f'checkpoint:{path}', metadata, notes)


def _new_head(model: VMUNet, num_classes: int) -> VMUNet:
    """The same network with a fresh ``final_conv`` for ``num_classes``."""
    arch = {**model.config, 'num_classes': num_classes}
    new = VMUNet(**arch)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD)}
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith(HEAD) for k in missing)
    return new


def set_drop_path(model: VMUNet, rate: float) -> None:
    """Re-spread stochastic depth 0 -> ``rate`` over the blocks, as at
    construction (encoder increasing, decoder decreasing)."""
    from ..model.vmunet import DropPath

    for stages in (model.vmunet.layers, model.vmunet.layers_up):
        paths = [m for m in stages.modules() if isinstance(m, DropPath)]
        rates = torch.linspace(0, rate, len(paths)).tolist()
        if stages is model.vmunet.layers_up:
            rates = rates[::-1]
        for m, p in zip(paths, rates, strict=True):
            m.drop_prob = float(p)


def _as_list(value: int | Sequence[int]) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def freeze_encoder(model: nn.Module, init: InitialModel, trained: bool) -> str:
    """Stop gradients at the encoder (``config.freeze_encoder``); returns
    the note saying so.  ``trained``: the weights come from a checkpoint
    (``init`` or a resume) -- random weights behind a frozen encoder would
    never learn, so that is refused."""
    if not isinstance(model, VMUNet):
        raise ValueError('freeze_encoder needs a VM-UNet')
    if not trained:
        raise ValueError(
            'decoder-only training (freeze_encoder) keeps the encoder as the '
            'starting model has it, and random weights would never learn: '
            'start from a trained checkpoint, or train all weights (untick '
            '"decoder only" in the dock, drop --freeze-encoder)'
        )
    net = model.vmunet
    for module in (net.patch_embed, net.layers):
        module.requires_grad_(False)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return (
        f'encoder frozen: {frozen:,} of {total:,} parameters kept as in '
        f'{init.description}'
    )
