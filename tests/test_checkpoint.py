"""Checkpoints: every accepted layout, our format, conversions, VMamba init,
and every kind of bad file (nothing runs, nothing is written)."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import stat
import subprocess
import sys
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from napari_vmunet.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointWarning,
    Metadata,
    convert,
    default_metadata,
    export_original,
    infer_config,
    load_checkpoint,
    load_vmamba_pretrained,
    save_checkpoint,
    training_state_path,
    validate_metadata,
)
from napari_vmunet.model import VMUNet
from tiny_models import TINY

ARCH_KEYS = (
    'num_classes',
    'input_channels',
    'depths',
    'depths_decoder',
    'dims',
    'dims_decoder',
    'd_state',
)


def arch(model: VMUNet) -> dict:
    return {k: model.config[k] for k in ARCH_KEYS}


def make_model(seed: int = 0, **kwargs) -> VMUNet:
    """A small VM-UNet whose every tensor is random (LayerNorms, A_logs and Ds
    included), so loading any wrong tensor changes the output."""
    torch.manual_seed(seed)
    model = VMUNet(**{**TINY, **kwargs})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def thop_keys(model: nn.Module, prefix: str = '') -> list[str]:
    """The buffers thop 0.1.1 leaves behind: on every module without a
    counting rule (spec 2.4)."""
    rule = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.Dropout)
    names = [n for n, m in model.named_modules() if not isinstance(m, rule)]
    return [
        prefix + (f'{n}.{b}' if n else b)
        for n in names
        for b in ('total_ops', 'total_params')
    ]


def with_thop(model: nn.Module, sd: dict, prefix: str = '') -> OrderedDict:
    out = OrderedDict(sd)
    for k in thop_keys(model, prefix):
        out[k] = torch.zeros(1, dtype=torch.float64)
    return out


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope='module')
def tiny():
    """(model, input, output) -- input 0-255, H and W multiples of 32."""
    model = make_model()
    torch.manual_seed(1)
    x = torch.rand(1, 3, 64, 64) * 255
    return model, x, forward(model, x)


@pytest.fixture(scope='module')
def default_model():
    torch.manual_seed(2)
    return VMUNet().eval()


def training_objects(model: VMUNet):
    """A real AdamW + cosine schedule after one step, as the original uses."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50, eta_min=1e-5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    sched.step()
    opt.zero_grad()
    return opt, sched


# --------------------------------------------------------------------------
# accepted layouts: each loads and gives identical outputs


def _write_layout(layout: str, model: VMUNet, path: Path) -> None:
    """A file in ``layout`` as the original code (or a wrapper) writes it."""
    sd = model.state_dict()
    if layout == 'best':
        torch.save(sd, path)
    elif layout == 'best-thop':
        torch.save(with_thop(model, sd), path)
    elif layout == 'best-legacy-format':
        torch.save(with_thop(model, sd), path, _use_new_zipfile_serialization=False)
    elif layout == 'dataparallel':
        torch.save(nn.DataParallel(model).state_dict(), path)
    elif layout == 'ddp-thop':
        wrapped = with_thop(model, sd)
        torch.save(OrderedDict(('module.' + k, v) for k, v in wrapped.items()), path)
    elif layout == 'compiled':
        torch.save({'_orig_mod.' + k: v for k, v in sd.items()}, path)
    elif layout == 'bare-vssm':
        torch.save(model.vmunet.state_dict(), path)
    elif layout == 'latest':
        opt, sched = training_objects(make_model())
        torch.save(
            {
                'epoch': 7,
                'min_loss': np.float64(0.25),
                'min_epoch': 5,
                'loss': np.float64(0.3),
                'model_state_dict': with_thop(model, sd),
                'optimizer_state_dict': opt.state_dict(),
                'scheduler_state_dict': sched.state_dict(),
            },
            path,
        )
    elif layout == 'latest-module':
        torch.save(
            {
                'epoch': 1,
                'min_loss': 0.5,
                'model_state_dict': nn.DataParallel(model).state_dict(),
            },
            path,
        )
    else:  # pragma: no cover
        raise AssertionError(layout)


LAYOUTS = {
    'best': 'original-best',
    'best-thop': 'original-best',
    'best-legacy-format': 'original-best',
    'dataparallel': 'original-best',
    'ddp-thop': 'original-best',
    'compiled': 'original-best',
    'bare-vssm': 'original-best',
    'latest': 'original-latest',
    'latest-module': 'original-latest',
}


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_every_original_layout_loads_with_identical_outputs(tiny, tmp_path, layout):
    model, x, y = tiny
    path = tmp_path / 'ckpt.pth'
    _write_layout(layout, model, path)
    before = listing(tmp_path)
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint)
    assert ckpt.source_format == LAYOUTS[layout]
    assert ckpt.config == arch(model)
    assert not ckpt.model.training
    assert torch.equal(forward(ckpt.model, x), y)
    assert ckpt.path == path
    assert listing(tmp_path) == before  # loading writes nothing
    validate_metadata(ckpt.metadata)  # defaults are complete and valid
    assert ckpt.metadata['input']['normalization'] == {'mode': 'minmax'}
    assert ckpt.metadata['input']['tile_size'] == [256, 256]
    assert ckpt.metadata['classes']['names'] == ['background', 'foreground']
    assert 'original VM-UNet' in ckpt.metadata['provenance']['notes']
    assert Metadata.from_dict(ckpt.metadata).to_dict() == ckpt.metadata
    assert ckpt.meta.input.tile == 256 and ckpt.meta.provenance.epochs >= 0


def test_latest_pth_exposes_its_training_state(tiny, tmp_path):
    model, _, _ = tiny
    path = tmp_path / 'latest.pth'
    _write_layout('latest', model, path)
    state = load_checkpoint(path).training_state
    assert set(state) == {
        'epoch',
        'min_loss',
        'min_epoch',
        'loss',
        'optimizer_state_dict',
        'scheduler_state_dict',
    }
    assert state['epoch'] == 7 and state['min_epoch'] == 5
    # numpy scalars (as the original writes them) come back as Python floats
    assert type(state['min_loss']) is float and state['min_loss'] == 0.25
    # the optimizer and scheduler state restore into real objects
    opt = torch.optim.AdamW(make_model().parameters(), lr=1e-3)
    opt.load_state_dict(state['optimizer_state_dict'])
    assert opt.state_dict()['state'][0]['step'] == 1
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=50)
    sched.load_state_dict(state['scheduler_state_dict'])
    assert sched.last_epoch == 1
    assert load_checkpoint(path).metadata['provenance']['epochs'] == 7


def test_numpy_1_pickled_scalars_load(tiny, tmp_path):
    """Original files come from numpy 1.x, which names numpy.core (not _core)."""
    model, x, y = tiny
    path = tmp_path / 'latest.pth'
    obj = {'epoch': 3, 'min_loss': np.float64(0.125), 'model_state_dict': {}}
    obj['model_state_dict'] = model.state_dict()
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    assert b'numpy._core.multiarray' in data
    path.write_bytes(data.replace(b'numpy._core.multiarray', b'numpy.core.multiarray'))
    ckpt = load_checkpoint(path)
    assert ckpt.training_state['min_loss'] == 0.125
    assert torch.equal(forward(ckpt.model, x), y)


def test_thop_buffers_of_the_default_model_are_the_176_of_the_spec(
    default_model, tmp_path
):
    keys = thop_keys(default_model)
    assert len(keys) == 176
    for k in (
        'total_ops',
        'total_params',
        'vmunet.layers.0.blocks.0.self_attention.act.total_ops',
        'vmunet.layers_up.3.upsample.total_params',
        'vmunet.final_up.total_ops',
        'vmunet.layers.2.downsample.total_params',
    ):
        assert k in keys
    sd = with_thop(default_model, default_model.state_dict())
    assert len(sd) == 222 + 176
    path = tmp_path / 'best.pth'
    torch.save(sd, path)
    ckpt = load_checkpoint(path)
    assert ckpt.config == arch(default_model)
    assert len(ckpt.model.state_dict()) == 222
    assert ckpt.parameter_count == 27_427_561
    for k, v in default_model.state_dict().items():
        assert torch.equal(ckpt.model.state_dict()[k], v), k


@pytest.mark.parametrize(
    'kwargs',
    [
        {},
        {'dims': (8, 16, 32, 64), 'num_classes': 4},
        {'dims': (16, 32, 64, 128), 'input_channels': 1, 'd_state': 8},
        {
            'dims': (8, 16, 32, 64),
            'depths': (1, 2, 3, 1),
            'depths_decoder': (3, 1, 2, 2),
        },
        {'dims': (8, 16, 32), 'depths': (2, 2, 1), 'depths_decoder': (1, 2, 1)},
    ],
)
def test_infer_config_reads_the_architecture_from_shapes(kwargs):
    torch.manual_seed(0)
    model = VMUNet(**kwargs)
    assert infer_config(model.state_dict()) == arch(model)
    # wrappers and thop buffers do not change the answer
    wrapped = with_thop(model, nn.DataParallel(model).state_dict(), 'module.')
    assert infer_config(wrapped) == arch(model)


def test_infer_config_refuses_what_is_not_vm_unet():
    with pytest.raises(CheckpointError) as err:
        infer_config({'conv1.weight': torch.zeros(1), 'fc.bias': torch.zeros(1)})
    assert str(err.value).startswith('the checkpoint is not a VM-UNet checkpoint')
    assert err.value.path is None
    sd = VMUNet(**TINY).state_dict()
    del sd['vmunet.patch_embed.proj.weight']
    with pytest.raises(CheckpointError, match='lacks vmunet.patch_embed.proj.weight'):
        infer_config(sd)


def test_other_configurations_load_with_identical_outputs(tmp_path):
    model = make_model(
        seed=3, num_classes=4, input_channels=1, d_state=8, depths_decoder=(2, 1, 1, 2)
    )
    torch.manual_seed(4)
    x = torch.rand(2, 1, 32, 96) * 255
    torch.save(model.state_dict(), tmp_path / 'best.pth')
    ckpt = load_checkpoint(tmp_path / 'best.pth')
    assert ckpt.config['num_classes'] == 4 and ckpt.config['d_state'] == 8
    assert ckpt.metadata['classes']['names'] == [
        'background',
        'class 1',
        'class 2',
        'class 3',
    ]
    assert torch.equal(forward(ckpt.model, x), forward(model, x))


def test_synapse_defaults_use_224_tiles_and_say_why(tmp_path):
    model = VMUNet(num_classes=9, **TINY)
    torch.save(model.state_dict(), tmp_path / 'best.pth')
    meta = load_checkpoint(tmp_path / 'best.pth').metadata
    assert meta['input']['tile_size'] == [224, 224]
    assert 'Synapse' in meta['provenance']['notes']
    assert len(meta['classes']['names']) == 9


def test_loading_leaves_the_global_rng_alone(tiny, tmp_path):
    model, _, _ = tiny
    torch.save(model.state_dict(), tmp_path / 'best.pth')
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_checkpoint(tmp_path / 'best.pth')
    assert torch.equal(torch.rand(3), expected)


def test_device_argument(tiny, tmp_path):
    model, _, _ = tiny
    torch.save(model.state_dict(), tmp_path / 'best.pth')
    ckpt = load_checkpoint(tmp_path / 'best.pth', device=torch.device('cpu'))
    assert next(ckpt.model.parameters()).device.type == 'cpu'
    with pytest.raises(ValueError, match='unknown device'):
        load_checkpoint(tmp_path / 'best.pth', device='toaster')


# --------------------------------------------------------------------------
# our format


def test_our_format_round_trip(tiny, tmp_path):
    model, x, y = tiny
    path = save_checkpoint(
        model,
        tmp_path / 'sub' / 'model.safetensors',  # missing folders are created
        metadata={
            'classes': {'names': ['background', 'lesion'], 'colors': [None, '#FF0000']},
            'input': {'normalization': 'percentile:1,99.8', 'tile_size': [256, 320]},
            'provenance': {'epochs': 12, 'best_val_dice': 0.81, 'notes': 'test'},
        },
    )
    assert path == tmp_path / 'sub' / 'model.safetensors'
    ckpt = load_checkpoint(path)
    assert ckpt.source_format == 'napari-vmunet'
    assert ckpt.training_state is None
    assert torch.equal(forward(ckpt.model, x), y)
    meta = ckpt.metadata
    assert meta['format_version'] == 1
    assert meta['architecture'] == arch(model)
    assert meta['classes'] == {
        'names': ['background', 'lesion'],
        'colors': [None, '#ff0000'],
    }
    assert meta['input'] == {
        'channels': 3,
        'normalization': {'mode': 'percentile', 'low': 1.0, 'high': 99.8},
        'tile_size': [256, 320],
    }
    prov = meta['provenance']
    assert prov['epochs'] == 12 and prov['best_val_dice'] == 0.81
    assert prov['package_version'] == __import__('napari_vmunet').__version__
    # the file is plain safetensors with the JSON under one key
    raw = safetensors.safe_open(str(path), 'pt')
    st_meta = raw.metadata()
    assert json.loads(st_meta['napari_vmunet']) == meta
    assert ckpt.meta.to_dict() == meta  # the typed view writes the same keys
    assert ckpt.meta.input.tile_size == [256, 320]
    assert ckpt.meta.classes.colors == [None, '#ff0000']
    assert st_meta['format'] == 'pt'
    assert all(k.startswith('vmunet.') for k in raw.keys())  # noqa: SIM118


def test_saving_a_checkpoint_keeps_its_metadata(tiny, tmp_path):
    model, x, y = tiny
    first = save_checkpoint(
        model, tmp_path / 'a.safetensors', metadata={'provenance': {'notes': 'kept'}}
    )
    ckpt = load_checkpoint(first)
    second = load_checkpoint(save_checkpoint(ckpt, tmp_path / 'b.safetensors'))
    assert second.metadata['provenance']['notes'] == 'kept'
    assert torch.equal(forward(second.model, x), y)


def test_training_state_sidecar(tiny, tmp_path):
    model, _, _ = tiny
    opt, sched = training_objects(make_model())
    state = {
        'optimizer': opt.state_dict(),
        'scheduler': sched.state_dict(),
        'epoch': 4,
        'history': [0.5, 0.4],
        'best': np.float32(0.5),  # numpy scalars are accepted as numbers
    }
    path = save_checkpoint(model, tmp_path / 'model.safetensors', training_state=state)
    side = training_state_path(path)
    assert side == tmp_path / 'model.train_state.pt'
    assert side.exists()
    back = load_checkpoint(path).training_state
    assert back['epoch'] == 4 and back['history'] == [0.5, 0.4] and back['best'] == 0.5
    fresh = torch.optim.AdamW(make_model().parameters())
    fresh.load_state_dict(back['optimizer'])
    assert torch.equal(
        fresh.state_dict()['state'][0]['exp_avg'],
        opt.state_dict()['state'][0]['exp_avg'],
    )
    # saving again without training state removes the now-stale sidecar
    save_checkpoint(model, path)
    assert not side.exists()
    assert load_checkpoint(path).training_state is None


def test_a_sidecar_from_another_save_is_ignored_with_a_warning(tiny, tmp_path):
    model, _, _ = tiny
    path = tmp_path / 'model.safetensors'
    side = training_state_path(path)
    save_checkpoint(model, path, training_state={'epoch': 1})
    old_sidecar = side.read_bytes()
    save_checkpoint(model, path, training_state={'epoch': 2})
    assert load_checkpoint(path).training_state == {'epoch': 2}
    side.write_bytes(old_sidecar)
    with pytest.warns(CheckpointWarning, match='saved with other weights'):
        assert load_checkpoint(path).training_state is None
    side.unlink()
    with pytest.warns(CheckpointWarning, match='missing'):
        assert load_checkpoint(path).training_state is None


def test_a_malicious_sidecar_is_refused_and_not_run(tiny, tmp_path):
    model, _, _ = tiny
    path = save_checkpoint(model, tmp_path / 'model.safetensors', training_state={})
    marker = tmp_path / 'MARKER'
    torch.save({'payload': _Evil(marker)}, training_state_path(path))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert 'model.train_state.pt' in str(err.value) and 'run code' in str(err.value)
    assert not marker.exists()


def test_training_state_must_be_plain_data(tiny, tmp_path):
    model, _, _ = tiny
    opt, _ = training_objects(make_model())
    for bad, where in (
        ({'optimizer': opt}, "training_state['optimizer'] is of type AdamW"),
        ({'fn': lambda: 1}, "training_state['fn'] is of type function"),
        ([1, 2], 'must be a dict'),
    ):
        with pytest.raises(ValueError, match=re.escape(where)):
            save_checkpoint(model, tmp_path / 'm.safetensors', training_state=bad)
    assert listing(tmp_path) == {}


@pytest.mark.parametrize(
    ('metadata', 'message'),
    [
        ({'classes': {'names': ['a', 'b', 'c']}}, 'a one-class model needs 2'),
        ({'classes': {'names': ['bg', 'bg']}}, 'must be unique'),
        ({'classes': {'names': ['a', 'b'], 'colors': ['red', None]}}, 'colors[0]'),
        ({'input': {'tile_size': [100, 100]}}, 'multiples of 32'),
        (
            {'input': {'normalization': {'mode': 'window', 'low': 5, 'high': 1}}},
            'low < high',
        ),
        ({'input': {'normalization': 'zscore'}}, 'cannot read normalization'),
        ({'input': {'channels': 1}}, 'input.channels'),
        ({'provenance': {'best_val_dice': 1.5}}, 'best_val_dice'),
        ({'provenance': {'epochs': -1}}, 'epochs'),
        ({'provenance': {'created': 'yesterday'}}, 'ISO 8601'),
        ({'provenance': {'colour': 'x'}}, 'unknown field'),
        ({'architecture': {'num_classes': 3}}, 'cannot be overridden'),
        ({'classes': 'a,b'}, 'must be a dict'),
        ({'extras': {}}, 'unknown metadata section'),
    ],
)
def test_invalid_metadata_is_refused_on_save(tiny, tmp_path, metadata, message):
    model, _, _ = tiny
    with pytest.raises(ValueError, match=re.escape(message)):
        save_checkpoint(model, tmp_path / 'm.safetensors', metadata=metadata)
    assert listing(tmp_path) == {}


def test_save_checkpoint_wants_safetensors_and_a_vmunet(tiny, tmp_path):
    model, _, _ = tiny
    with pytest.raises(ValueError, match='export_original'):
        save_checkpoint(model, tmp_path / 'm.pth')
    with pytest.raises(TypeError, match='VMUNet'):
        save_checkpoint(nn.Linear(2, 2), tmp_path / 'm.safetensors')
    # DataParallel-wrapped models are unwrapped
    save_checkpoint(nn.DataParallel(model), tmp_path / 'dp.safetensors')
    assert load_checkpoint(tmp_path / 'dp.safetensors').config == arch(model)


def test_default_metadata():
    meta = default_metadata(VMUNet(**TINY).config)
    assert meta['classes'] == {
        'names': ['background', 'foreground'],
        'colors': [None, None],
    }
    assert meta['input']['normalization'] == {'mode': 'minmax'}
    assert meta['input']['tile_size'] == [256, 256]
    assert meta['provenance']['epochs'] == 0
    four = default_metadata(
        {**VMUNet(**TINY).config, 'num_classes': 4},
        class_names=['bg', 'a', 'b', 'c'],
        normalization='window:-125,275',
        tile_size=224,
        epochs=3,
        training_data='folder',
    )
    assert four['classes']['colors'] == [None] * 4
    assert four['input']['normalization'] == {
        'mode': 'window',
        'low': -125.0,
        'high': 275.0,
    }
    assert four['input']['tile_size'] == [224, 224]
    assert four['provenance']['epochs'] == 3
    assert four['provenance']['training_data'] == 'folder'
    assert validate_metadata(four) == four
    assert default_metadata(VMUNet(**TINY).config, normalization='percentile')['input'][
        'normalization'
    ] == {'mode': 'percentile', 'low': 1.0, 'high': 99.8}
    synapse = default_metadata(
        VMUNet(**TINY).config, normalization='window:-125,275:0,1'
    )
    assert synapse['input']['normalization'] == {
        'mode': 'window',
        'low': -125.0,
        'high': 275.0,
        'range': [0.0, 1.0],
    }
    assert validate_metadata(synapse) == synapse
    assert default_metadata(VMUNet(**TINY).config, normalization='none')['input'][
        'normalization'
    ] == {'mode': 'none'}
    with pytest.raises(ValueError, match='range'):
        default_metadata(VMUNet(**TINY).config, normalization='window:0,1:5,1')
    with pytest.raises(TypeError, match='unknown metadata field'):
        default_metadata(VMUNet(**TINY).config, colour='red')
    with pytest.raises(ValueError, match='newer'):
        validate_metadata({**meta, 'format_version': 2})


# --------------------------------------------------------------------------
# atomic writes


class _ExplodingWriter:
    """Writes half a file, then fails -- like a full disk."""

    def __init__(self, error: type[Exception] = OSError):
        self.error = error
        self.calls = 0

    def __call__(self, obj, path, *args, **kwargs):
        self.calls += 1
        Path(path).write_bytes(b'partial data')
        raise self.error('No space left on device')


def test_failed_save_leaves_the_old_file_untouched(tiny, tmp_path, monkeypatch):
    model, _, _ = tiny
    path = save_checkpoint(
        model, tmp_path / 'm.safetensors', training_state={'epoch': 1}
    )
    before = listing(tmp_path)
    assert set(before) == {'m.safetensors', 'm.train_state.pt'}
    boom = _ExplodingWriter()
    monkeypatch.setattr(safetensors.torch, 'save_file', boom)
    with pytest.raises(OSError, match='No space'):
        save_checkpoint(make_model(seed=9), path, training_state={'epoch': 2})
    assert boom.calls == 1
    assert listing(tmp_path) == before  # byte-identical, no temp files
    monkeypatch.undo()
    # the sidecar's writer failing leaves both files untouched as well
    monkeypatch.setattr(torch, 'save', _ExplodingWriter())
    with pytest.raises(OSError):
        save_checkpoint(make_model(seed=9), path, training_state={'epoch': 2})
    assert listing(tmp_path) == before
    monkeypatch.undo()
    assert load_checkpoint(path).training_state == {'epoch': 1}


def test_failed_export_leaves_the_old_file_untouched(tiny, tmp_path, monkeypatch):
    model, _, _ = tiny
    path = export_original(model, tmp_path / 'best.pth')
    before = listing(tmp_path)
    monkeypatch.setattr(torch, 'save', _ExplodingWriter(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        export_original(make_model(seed=9), path)
    assert listing(tmp_path) == before


def test_new_files_get_normal_permissions(tiny, tmp_path):
    model, _, _ = tiny
    umask = os.umask(0o022)
    os.umask(umask)
    path = save_checkpoint(model, tmp_path / 'm.safetensors')
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    os.chmod(path, 0o640)
    save_checkpoint(model, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


# --------------------------------------------------------------------------
# export and convert


def test_export_original_is_the_original_best_pth_layout(tiny, tmp_path):
    model, x, y = tiny
    path = export_original(model, tmp_path / 'best.pth')
    sd = torch.load(path, map_location='cpu', weights_only=True)
    assert list(sd) == list(model.state_dict())
    fresh = VMUNet(**TINY)
    fresh.load_state_dict(sd)  # strict, as the original does
    assert torch.equal(forward(fresh, x), y)
    with pytest.raises(ValueError, match='save_checkpoint'):
        export_original(model, tmp_path / 'x.safetensors')


def test_original_to_ours_to_original_is_lossless(tiny, tmp_path):
    model, x, y = tiny
    src = tmp_path / 'best.pth'
    _write_layout('ddp-thop', model, src)
    ours = convert(src, tmp_path / 'model.safetensors')
    back = convert(ours, tmp_path / 'again.pth')
    original = model.state_dict()
    exported = torch.load(back, map_location='cpu', weights_only=True)
    assert list(exported) == list(original)
    for k, v in original.items():
        assert torch.equal(exported[k], v), k
        assert exported[k].dtype == v.dtype
    assert torch.equal(forward(load_checkpoint(ours).model, x), y)
    assert torch.equal(forward(load_checkpoint(back).model, x), y)


def test_convert_latest_keeps_the_training_state(tiny, tmp_path):
    model, _, _ = tiny
    src = tmp_path / 'latest.pth'
    _write_layout('latest', model, src)
    out = convert(
        src,
        tmp_path / 'model.safetensors',
        metadata={'classes': {'names': ['bg', 'lesion']}},
    )
    ckpt = load_checkpoint(out)
    assert ckpt.training_state['epoch'] == 7
    assert 'optimizer_state_dict' in ckpt.training_state
    assert ckpt.metadata['classes']['names'] == ['bg', 'lesion']
    assert ckpt.metadata['provenance']['epochs'] == 7
    assert ckpt.meta.to_dict() == ckpt.metadata


def test_convert_refuses_unknown_extensions_and_metadata_for_pth(tiny, tmp_path):
    model, _, _ = tiny
    src = export_original(model, tmp_path / 'best.pth')
    with pytest.raises(ValueError, match='extension'):
        convert(src, tmp_path / 'out.onnx')
    with pytest.raises(ValueError, match='no metadata'):
        convert(src, tmp_path / 'out.pth', metadata={'classes': {'names': ['a', 'b']}})
    assert set(listing(tmp_path)) == {'best.pth'}


# --------------------------------------------------------------------------
# bad files: CheckpointError naming the file, nothing run, nothing written


class _Evil:
    """A pickle payload: unpickling it calls open(marker, 'w')."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), 'w'))


def _expect_error(path: Path, *fragments: str) -> CheckpointError:
    folder = path.parent if path.parent.exists() else None
    before = listing(folder) if folder and folder.is_dir() else None
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    if before is not None:
        assert listing(folder) == before
    assert isinstance(info.value, ValueError)
    return info.value


def test_malicious_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / 'MARKER'
    # the payload is live: an ordinary unpickler does create the marker
    probe = tmp_path / 'probe' / 'PROBE'
    probe.parent.mkdir()
    pickle.loads(pickle.dumps(_Evil(probe))).close()
    assert probe.exists()
    # zip format, inside a state dict
    torch.save({'vmunet.final_conv.weight': _Evil(marker)}, tmp_path / 'evil.pth')
    _expect_error(tmp_path / 'evil.pth', 'run code', 'refused', 'ran nothing')
    # legacy format / raw protocol-2 pickle
    with open(tmp_path / 'evil2.pth', 'wb') as f:
        pickle.dump({'a': _Evil(marker)}, f, protocol=2)
    _expect_error(tmp_path / 'evil2.pth', 'refused', 'ran nothing')
    # raw modern pickle
    with open(tmp_path / 'evil3.pkl', 'wb') as f:
        pickle.dump({'a': _Evil(marker)}, f, protocol=5)
    _expect_error(tmp_path / 'evil3.pkl', 'refused', 'ran nothing')
    assert not marker.exists()


def test_damaged_and_foreign_files(tiny, tmp_path):
    model, _, _ = tiny
    good = tmp_path / 'good.pth'
    torch.save(model.state_dict(), good)
    data = good.read_bytes()
    cases = {
        'empty.pth': (b'', ['empty']),
        'truncated.pth': (data[: len(data) // 2], ['truncated', 'again']),
        'random.pth': (
            random.Random(0).randbytes(5000),
            ['not a PyTorch or safetensors'],
        ),
        'notes.pth': (b'epochs: 300\nlr: 0.001\n', ['text file', 'epochs: 300']),
        'page.pth': (b'<!DOCTYPE html><html>Google Drive', ['HTML', 'download']),
        'lfs.pth': (
            b'version https://git-lfs.github.com/spec/v1\noid sha256:abc\n',
            ['Git LFS', 'git lfs pull'],
        ),
    }
    for name, (content, fragments) in cases.items():
        (tmp_path / name).write_bytes(content)
        _expect_error(tmp_path / name, *fragments)
    with zipfile.ZipFile(tmp_path / 'archive.pth', 'w') as archive:
        archive.writestr('weights/readme.txt', 'the weights are elsewhere')
    _expect_error(tmp_path / 'archive.pth', 'zip archive but not a PyTorch')
    with open(tmp_path / 'plain.pkl', 'wb') as f:
        pickle.dump({'vmunet.x': [1.0]}, f, protocol=2)
    _expect_error(tmp_path / 'plain.pkl', 'plain Python pickle')
    legacy = tmp_path / 'legacy.pth'
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:-1000])
    _expect_error(legacy, 'truncated')


def test_missing_paths_and_folders(tmp_path):
    err = _expect_error(tmp_path / 'nope.pth', 'no such file')
    assert err.path == tmp_path / 'nope.pth' and 'no such file' in err.problem
    # it survives a process boundary (training reports errors from a subprocess)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and again.path == err.path
    (tmp_path / 'run').mkdir()
    (tmp_path / 'run' / 'best.pth').write_bytes(b'x')
    _expect_error(tmp_path / 'run', 'is a folder', 'best.pth')


def test_wrong_shape_is_reported_per_tensor(tiny, tmp_path):
    model, _, _ = tiny
    sd = dict(model.state_dict())
    sd['vmunet.final_conv.weight'] = torch.zeros(4, 2, 1, 1)
    torch.save(sd, tmp_path / 'best.pth')
    _expect_error(
        tmp_path / 'best.pth',
        'vmunet.final_conv.weight has shape [4, 2, 1, 1], expected [1, 2, 1, 1]',
    )


def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    model, _, _ = tiny
    sd = dict(model.state_dict())
    gone = [
        'vmunet.layers.0.blocks.1.ln_1.weight',
        'vmunet.layers.0.blocks.1.ln_1.bias',
        'vmunet.layers.0.blocks.1.self_attention.Ds',
    ]
    for k in gone:
        del sd[k]
    torch.save(sd, tmp_path / 'missing.pth')
    _expect_error(tmp_path / 'missing.pth', 'missing 3 keys: ' + ', '.join(gone))
    sd = dict(model.state_dict())
    sd['vmunet.extra_head.weight'] = torch.zeros(3)
    torch.save(sd, tmp_path / 'extra.pth')
    _expect_error(tmp_path / 'extra.pth', '1 unexpected key: vmunet.extra_head.weight')


def test_non_finite_and_non_tensor_values(tiny, tmp_path):
    model, _, _ = tiny
    sd = dict(model.state_dict())
    sd['vmunet.final_conv.bias'] = torch.tensor([float('nan')])
    torch.save(sd, tmp_path / 'nan.pth')
    _expect_error(tmp_path / 'nan.pth', 'NaN', 'vmunet.final_conv.bias', 'diverged')
    sd = dict(model.state_dict())
    sd['vmunet.final_conv.bias'] = 'zero'
    torch.save(sd, tmp_path / 'str.pth')
    _expect_error(tmp_path / 'str.pth', "'vmunet.final_conv.bias' holds a str")
    torch.save([1, 2, 3], tmp_path / 'list.pth')
    _expect_error(tmp_path / 'list.pth', 'holds a list')
    torch.save({}, tmp_path / 'emptydict.pth')
    _expect_error(tmp_path / 'emptydict.pth', 'no tensors')


def test_foreign_checkpoints_are_named_as_such(tmp_path):
    resnet_like = OrderedDict(
        [
            ('conv1.weight', torch.zeros(64, 3, 7, 7)),
            ('bn1.weight', torch.ones(64)),
            ('bn1.running_mean', torch.zeros(64)),
            ('layer1.0.conv1.weight', torch.zeros(64, 64, 3, 3)),
            ('fc.weight', torch.zeros(1000, 512)),
        ]
    )
    torch.save(resnet_like, tmp_path / 'resnet18.pth')
    _expect_error(tmp_path / 'resnet18.pth', 'not a VM-UNet checkpoint', 'conv1.weight')
    torch.save({'model': resnet_like, 'optimizer': {}}, tmp_path / 'wrapped.pth')
    _expect_error(tmp_path / 'wrapped.pth', 'model, optimizer', 'latest.pth')


def test_our_format_with_missing_or_bad_metadata(tiny, tmp_path):
    model, _, _ = tiny
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(tensors, tmp_path / 'plain.safetensors')
    _expect_error(tmp_path / 'plain.safetensors', 'without napari-vmunet metadata')
    safetensors.torch.save_file(
        tensors, tmp_path / 'json.safetensors', metadata={'napari_vmunet': '{oops'}
    )
    _expect_error(tmp_path / 'json.safetensors', 'not valid JSON')
    meta = default_metadata(model.config)
    bad = {**meta, 'classes': {'names': ['a', 'b', 'c'], 'colors': [None] * 3}}
    safetensors.torch.save_file(
        tensors,
        tmp_path / 'names.safetensors',
        metadata={'napari_vmunet': json.dumps(bad)},
    )
    _expect_error(tmp_path / 'names.safetensors', 'invalid', 'classes.names has 3')
    lying = {**meta, 'architecture': {**meta['architecture'], 'num_classes': 4}}
    lying['classes'] = {'names': ['a', 'b', 'c', 'd'], 'colors': [None] * 4}
    safetensors.torch.save_file(
        tensors,
        tmp_path / 'lying.safetensors',
        metadata={'napari_vmunet': json.dumps(lying)},
    )
    _expect_error(tmp_path / 'lying.safetensors', 'num_classes: metadata 4, tensors 1')
    # a valid file, then cut short
    good = save_checkpoint(model, tmp_path / 'good.safetensors')
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(good.read_bytes()[:-100])
    _expect_error(cut, 'truncated')


def test_vmamba_backbone_is_not_a_model(tmp_path):
    encoder = {
        k: v
        for k, v in VMUNet(**TINY).vmunet.state_dict().items()
        if k.startswith(('patch_embed.', 'layers.'))
    }
    torch.save({'model': encoder, 'epoch': 238}, tmp_path / 'vmamba.pth')
    _expect_error(tmp_path / 'vmamba.pth', 'VMamba', 'load_vmamba_pretrained')


# --------------------------------------------------------------------------
# VMamba-S pretrained initialisation


def vmamba_s_state_dict(default_model: VMUNet) -> dict[str, torch.Tensor]:
    """The 446 tensors of VMamba-S v0 (depths 2-2-27-2, dims 96..768, plus the
    classifier's norm and head), random values, shapes from spec 2.5."""
    enc = {
        k: v
        for k, v in default_model.vmunet.state_dict().items()
        if k.startswith(('patch_embed.', 'layers.'))
    }
    gen = torch.Generator().manual_seed(5)
    out = {}
    for k, v in enc.items():
        if k.startswith('layers.2.blocks.'):
            continue
        out[k] = torch.randn(v.shape, generator=gen)
    block = {
        k[len('layers.2.blocks.0.') :]: v
        for k, v in enc.items()
        if k.startswith('layers.2.blocks.0.')
    }
    for j in range(27):
        for name, v in block.items():
            out[f'layers.2.blocks.{j}.{name}'] = torch.randn(v.shape, generator=gen)
    out['norm.weight'] = torch.randn(768, generator=gen)
    out['norm.bias'] = torch.randn(768, generator=gen)
    out['head.weight'] = torch.randn(1000, 768, generator=gen)
    out['head.bias'] = torch.randn(1000, generator=gen)
    return out


@pytest.fixture(scope='module')
def vmamba_file(default_model, tmp_path_factory):
    """A VMamba-S file laid out as VMamba's training script saves it,
    including a yacs CfgNode config whose code must never run."""
    folder = tmp_path_factory.mktemp('vmamba')
    marker = folder / 'CFG_MARKER'
    pkg = folder / 'fakeyacs' / 'yacs'
    pkg.mkdir(parents=True)
    (pkg / '__init__.py').write_text('')
    (pkg / 'config.py').write_text(
        'class CfgNode(dict):\n'
        '    def __init__(self, init=None):\n'
        '        super().__init__(init or {})\n'
        "        self.__dict__['__immutable__'] = False\n"
        '    def __setstate__(self, state):\n'
        f'        open({str(marker)!r}, "w").close()\n'
        '        self.__dict__.update(state)\n'
    )
    sys.path.insert(0, str(pkg.parent))
    try:
        from yacs.config import CfgNode

        config = CfgNode({'MODEL': CfgNode({'TYPE': 'vssm', 'DROP_PATH_RATE': 0.3})})
        weights = vmamba_s_state_dict(default_model)
        path = folder / 'vmamba_small_e238_ema.pth'
        torch.save(
            {
                'model': weights,
                'optimizer': {'state': {}, 'param_groups': []},
                'lr_scheduler': {'t_initial': 300},
                'max_accuracy': 83.5,
                'scaler': {'scale': 65536.0},
                'epoch': 238,
                'config': config,
            },
            path,
        )
        # the file really holds the foreign class (plain weights_only refuses it)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        assert 'yacs.config.CfgNode' in unsafe
    finally:
        sys.path.remove(str(pkg.parent))
        for name in [m for m in sys.modules if m == 'yacs' or m.startswith('yacs.')]:
            del sys.modules[name]
    return path, weights, marker


def test_vmamba_s_initialises_encoder_and_decoder(vmamba_file):
    path, weights, marker = vmamba_file
    assert len(weights) == 446
    torch.manual_seed(6)
    model = VMUNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_vmamba_pretrained(model, path)
    assert not marker.exists()  # the CfgNode's code never ran
    assert 'yacs' not in sys.modules
    assert report['encoder'] == 117
    assert report['decoder'] == 91
    assert report['unused'] == 446 - 117
    assert sorted(report['not_initialised']) == sorted(
        [
            f'vmunet.layers_up.{i}.upsample.{n}'
            for i in (1, 2, 3)
            for n in ('expand.weight', 'norm.weight', 'norm.bias')
        ]
        + ['vmunet.final_up.expand.weight', 'vmunet.final_up.norm.weight']
        + ['vmunet.final_up.norm.bias', 'vmunet.final_conv.weight']
        + ['vmunet.final_conv.bias']
    )
    sd = model.state_dict()
    # encoder: identical names
    for k in (
        'patch_embed.proj.weight',
        'layers.2.blocks.1.self_attention.A_logs',
        'layers.1.downsample.reduction.weight',
    ):
        assert torch.equal(sd['vmunet.' + k], weights[k]), k
    # decoder: stage i -> 3 - i, same block index
    pairs = {
        'layers_up.0.blocks.1.self_attention.x_proj_weight': 'layers.3.blocks.1',
        'layers_up.1.blocks.0.ln_1.weight': 'layers.2.blocks.0',
        'layers_up.2.blocks.1.self_attention.out_proj.weight': 'layers.1.blocks.1',
        'layers_up.3.blocks.0.self_attention.dt_projs_bias': 'layers.0.blocks.0',
    }
    for dst, src_block in pairs.items():
        src = src_block + dst[len('layers_up.0.blocks.0') :]
        assert torch.equal(sd['vmunet.' + dst], weights[src]), dst
    # the 14 others keep their random initialisation
    for k in report['not_initialised']:
        assert torch.equal(sd[k], before[k]), k
    changed = [k for k in sd if not torch.equal(sd[k], before[k])]
    assert len(changed) == 117 + 91


def test_vmamba_with_other_widths_is_refused_and_nothing_changes(vmamba_file):
    path, _, _ = vmamba_file
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_vmamba_pretrained(model, path)
    text = str(err.value)
    assert (
        str(path) in text
        and 'differ in shape' in text
        and 'dims 96/192/384/768' in text
    )
    assert 'Nothing was copied' in text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_vmamba_flat_state_dict_and_small_widths(tmp_path):
    """A flat VMamba state dict works too, for any widths that match."""
    source = make_model(seed=7)
    encoder = {
        k: v
        for k, v in source.vmunet.state_dict().items()
        if k.startswith(('patch_embed.', 'layers.'))
    }
    torch.save(encoder, tmp_path / 'flat.pth')
    model = make_model(seed=8)
    report = load_vmamba_pretrained(model, tmp_path / 'flat.pth')
    assert (report['encoder'], report['decoder'], report['unused']) == (117, 91, 0)
    assert torch.equal(
        model.vmunet.layers_up[0].blocks[0].ln_1.weight,
        source.vmunet.layers[3].blocks[0].ln_1.weight,
    )


def test_vmamba_wrong_kinds_of_file(tiny, tmp_path):
    model, _, _ = tiny
    torch.save(model.state_dict(), tmp_path / 'vmunet.pth')
    with pytest.raises(CheckpointError, match='complete VM-UNet checkpoint'):
        load_vmamba_pretrained(make_model(), tmp_path / 'vmunet.pth')
    new_style = {
        'patch_embed.0.weight': torch.zeros(96, 3, 4, 4),
        'layers.0.blocks.0.norm.weight': torch.zeros(96),
        'layers.0.blocks.0.op.x_proj_weight': torch.zeros(4, 38, 192),
        'classifier.head.weight': torch.zeros(1000, 768),
    }
    torch.save({'model': new_style}, tmp_path / 'vmamba_v2.pth')
    with pytest.raises(CheckpointError, match='newer VMamba release'):
        load_vmamba_pretrained(make_model(), tmp_path / 'vmamba_v2.pth')
    torch.save({'conv1.weight': torch.zeros(1)}, tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match='not a VMamba v0 checkpoint'):
        load_vmamba_pretrained(make_model(), tmp_path / 'resnet.pth')
    with pytest.raises(CheckpointError, match='no such file'):
        load_vmamba_pretrained(make_model(), tmp_path / 'missing.pth')


def test_importing_the_module_does_not_import_napari_or_qt():
    code = (
        'import sys, napari_vmunet.checkpoint, napari_vmunet.cli.info, '
        'napari_vmunet.cli.convert\n'
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'magicgui')]\n"
        'assert not bad, bad\n'
    )
    subprocess.run([sys.executable, '-c', code], check=True)


# --------------------------------------------------------------------------
# crash consistency: a kill at any moment of a save leaves a resumable pair

SAVE_STEPS = ('write', 'fsync', 'replace', 'fsync_dir')


def _save_killed_at(path: Path, model, state: dict, step: int) -> int:
    """Run ``save_checkpoint`` in a forked child that is SIGKILLed right
    before its ``step``-th file-system step (a write, fsync or rename);
    returns how many steps the save has, when it was not killed."""
    import napari_vmunet._files as files

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: count the steps, die at the chosen one
        os.close(read)
        torch.set_num_threads(1)
        seen = [0]

        def step_hook(real):
            def run(*args, **kwargs):
                seen[0] += 1
                if seen[0] == step:
                    os.kill(os.getpid(), 9)
                return real(*args, **kwargs)

            return run

        files.os.replace = step_hook(os.replace)
        files.fsync_file = step_hook(files.fsync_file)
        files.fsync_dir = step_hook(files.fsync_dir)
        real_save_file, real_torch_save = safetensors.torch.save_file, torch.save
        safetensors.torch.save_file = step_hook(real_save_file)
        torch.save = step_hook(real_torch_save)
        save_checkpoint(model, path, training_state=state)
        os.write(write, str(seen[0]).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    steps = os.read(read, 64)
    os.close(read)
    if os.WIFSIGNALED(status):
        return -1
    assert os.WEXITSTATUS(status) == 0
    return int(steps)


def test_a_kill_at_any_step_of_a_save_leaves_a_resumable_pair(tmp_path):
    old, new = make_model(seed=1), make_model(seed=2)
    path = tmp_path / 'run.last.safetensors'
    probe = 'vmunet.final_conv.bias'
    # how many steps a save has (2 writes, 2 fsyncs, 2 renames, dir fsyncs)
    steps = _save_killed_at(tmp_path / 'probe.safetensors', new, {'epoch': 2}, 0)
    assert steps >= 6
    outcomes = []
    for step in range(1, steps + 1):
        save_checkpoint(old, path, training_state={'epoch': 1})
        assert _save_killed_at(path, new, {'epoch': 2}, step) == -1  # it died
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CheckpointWarning)
            ckpt = load_checkpoint(path)
        weights = ckpt.model.state_dict()[probe]
        if torch.equal(weights, old.state_dict()[probe]):
            assert ckpt.training_state == {'epoch': 1}, step  # all old
            outcomes.append('old')
        else:
            assert torch.equal(weights, new.state_dict()[probe]), step
            assert ckpt.training_state == {'epoch': 2}, step  # all new
            outcomes.append('new')
        # the next save tidies up whatever the kill left behind
        save_checkpoint(new, path, training_state={'epoch': 3})
        hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith('.')]
        assert hidden == [], (step, hidden)
        assert load_checkpoint(path).training_state == {'epoch': 3}
        for p in tmp_path.iterdir():
            p.unlink()
    # kills before the weights' rename keep the old pair, later ones the new
    assert outcomes == sorted(outcomes, reverse=True) and set(outcomes) == {
        'old',
        'new',
    }, outcomes


def test_an_interrupted_save_is_read_from_its_temporary_sidecar(tmp_path):
    path = tmp_path / 'm.safetensors'
    save_checkpoint(make_model(seed=1), path, training_state={'epoch': 1})
    side = training_state_path(path)
    stale = side.read_bytes()
    save_checkpoint(make_model(seed=2), path, training_state={'epoch': 2})
    # the moment between the two renames: new weights in place, the new
    # sidecar still in its temporary file, the old sidecar where it was
    side.rename(side.with_name(f'.{side.stem}.0badcafe.partial.pt'))
    side.write_bytes(stale)
    with pytest.warns(CheckpointWarning, match='interrupted'):
        ckpt = load_checkpoint(path)
    assert ckpt.training_state == {'epoch': 2}


def test_the_python_api_takes_a_built_in_models_name():
    # the same names as the command line's: one resolver for every entry point
    from napari_vmunet.inference import Predictor
    from napari_vmunet.zoo import builtin_checkpoints

    models = builtin_checkpoints()
    assert 'demo-nuclei' in models
    ckpt = load_checkpoint('demo-nuclei')
    assert ckpt.metadata == load_checkpoint(models['demo-nuclei']).metadata
    from napari_vmunet.io import load_sample

    nuclei = np.asarray(load_sample('nuclei')[0].data)[:128, :128]
    by_name = Predictor('demo-nuclei', device='cpu').predict(nuclei).labels
    by_path = Predictor(models['demo-nuclei'], device='cpu').predict(nuclei).labels
    assert by_name.any() and np.array_equal(by_name, by_path)
    with pytest.raises(CheckpointError, match='neither a file nor a built-in model'):
        load_checkpoint('demo-nucleii')
