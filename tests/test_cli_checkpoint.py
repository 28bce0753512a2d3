"""``napari-vmunet info`` and ``napari-vmunet convert``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_vmunet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_vmunet.cli import build_parser, main
from napari_vmunet.model import VMUNet
from napari_vmunet.zoo import builtin_checkpoint
from tiny_models import TINY, tiny_model


@pytest.fixture(scope='module')
def model():
    return tiny_model().eval()


@pytest.fixture
def best(model, tmp_path) -> Path:
    """An original best.pth (with a thop buffer, as train.py writes it)."""
    path = tmp_path / 'best.pth'
    sd = dict(model.state_dict())
    sd['total_ops'] = torch.zeros(1, dtype=torch.float64)
    torch.save(sd, path)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def outputs(model: VMUNet, path: Path) -> bool:
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32) * 255
    with torch.no_grad():
        return torch.equal(load_checkpoint(path).model(x), model(x))


def test_both_commands_are_registered():
    text = build_parser().format_help()
    assert 'info' in text and 'convert' in text


def test_info_text(capsys, model, best):
    code, out, err = run(capsys, 'info', best)
    assert code == 0 and err == ''
    n = sum(p.numel() for p in model.parameters())
    for line in (
        'Format:',
        'original VM-UNet best.pth layout',
        'encoder dims 8/16/32/64 depths 2-2-2-2',
        'decoder dims 64/32/16/8 depths 2-2-2-1',
        f'Parameters:       {n:,}',
        'foreground probability (sigmoid)',
        '0 background, 1 foreground',
        'minmax',
        '256 x 256',
        'Training state:   none',
    ):
        assert line in out, out


def test_info_json_for_latest(capsys, model, tmp_path):
    path = tmp_path / 'latest.pth'
    torch.save(
        {
            'epoch': 12,
            'min_loss': np.float64(0.2),
            'model_state_dict': model.state_dict(),
            'optimizer_state_dict': {'state': {}, 'param_groups': []},
        },
        path,
    )
    code, out, _ = run(capsys, 'info', path, '--json')
    assert code == 0
    info = json.loads(out)
    assert info['source_format'] == 'original-latest'
    assert info['architecture']['dims'] == [8, 16, 32, 64]
    assert info['parameters'] == sum(p.numel() for p in model.parameters())
    assert info['metadata']['provenance']['epochs'] == 12
    assert info['training_state']['epoch'] == 12
    assert info['training_state']['min_loss'] == 0.2
    assert info['training_state']['optimizer_state_dict'] == 'dict with 2 entries'


def test_info_on_a_bad_file_prints_one_line(capsys, tmp_path):
    bad = tmp_path / 'notes.pth'
    bad.write_text('not a model')
    code, out, err = run(capsys, 'info', bad)
    assert code == 1 and out == ''
    first = err.splitlines()[0]
    assert first.startswith('napari-vmunet: error: ')
    assert str(bad) in first and 'text file' in first
    assert 'Traceback' not in err
    with pytest.raises(CheckpointError, match='text file'):
        main(['--debug', 'info', str(bad)])  # --debug lets the error through


def test_convert_original_to_ours_with_metadata(capsys, model, best, tmp_path):
    out_path = tmp_path / 'lesion.safetensors'
    code, out, err = run(
        capsys,
        'convert',
        best,
        out_path,
        '--class-names',
        'background,lesion',
        '--normalization',
        'window:-125,275',
        '--tile-size',
        '224,320',
        '--notes',
        'ISIC run 3',
    )
    assert code == 0, err
    assert f'wrote {out_path}' in out
    ckpt = load_checkpoint(out_path)
    meta = ckpt.metadata
    assert meta['classes']['names'] == ['background', 'lesion']
    assert meta['input']['normalization'] == {
        'mode': 'window',
        'low': -125.0,
        'high': 275.0,
    }
    assert meta['input']['tile_size'] == [224, 320]
    assert meta['provenance']['notes'] == 'ISIC run 3'
    assert meta['provenance']['command'].startswith('napari-vmunet convert ')
    assert '--class-names background,lesion' in meta['provenance']['command']
    assert outputs(model, out_path)
    code, out, _ = run(capsys, 'info', out_path)
    assert '0 background, 1 lesion' in out and 'window [-125, 275]' in out


def test_convert_ours_to_original(capsys, model, tmp_path):
    src = save_checkpoint(model, tmp_path / 'model.safetensors')
    dst = tmp_path / 'best.pth'
    code, _, err = run(capsys, 'convert', src, dst)
    assert code == 0, err
    sd = torch.load(dst, map_location='cpu', weights_only=True)
    fresh = VMUNet(**TINY)
    fresh.load_state_dict(sd)  # the original's strict load
    assert outputs(model, dst)


def test_every_model_command_takes_a_built_in_models_name(capsys, tmp_path):
    """convert, info and export resolve names with zoo.resolve_model, as
    predict and train --init do; an unknown name lists the built-in ones."""
    demo = builtin_checkpoint('demo-nuclei')
    dst = tmp_path / 'demo.pth'
    code, _, err = run(capsys, 'convert', 'demo-nuclei', dst)
    assert code == 0, err
    original = load_checkpoint(dst)
    assert original.source_format == 'original-best'
    theirs, ours = original.model.state_dict(), load_checkpoint(demo).model.state_dict()
    assert list(theirs) == list(ours)
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)
    code, out, err = run(capsys, 'info', 'demo-nuclei')
    assert code == 0 and str(demo) in out, err
    code, _, err = run(capsys, 'convert', 'demo-nope', tmp_path / 'x.pth')
    assert code == 1 and 'built-in models: demo-brain, demo-nuclei' in err, err
    assert not (tmp_path / 'x.pth').exists()


def test_convert_refuses_to_overwrite_without_force(capsys, model, best, tmp_path):
    dst = tmp_path / 'model.safetensors'
    dst.write_bytes(b'keep me')
    code, _, err = run(capsys, 'convert', best, dst)
    assert code == 1 and 'already exists' in err and '--force' in err
    assert dst.read_bytes() == b'keep me'
    code, _, err = run(capsys, 'convert', best, dst, '--force')
    assert code == 0, err
    assert outputs(model, dst)


@pytest.mark.parametrize(
    ('options', 'message'),
    [
        (['--normalization', 'zscore'], 'cannot read normalization'),
        (['--tile-size', '100'], 'multiples of 32'),
        (['--tile-size', 'big'], 'cannot read'),
        (['--class-names', 'a,b,c'], 'a one-class model needs 2'),
    ],
)
def test_convert_bad_options(capsys, best, tmp_path, options, message):
    dst = tmp_path / 'out.safetensors'
    code, _, err = run(capsys, 'convert', best, dst, *options)
    assert code == 1 and message in err, err
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['best.pth']


def test_convert_metadata_options_need_safetensors(capsys, best, tmp_path):
    code, _, err = run(
        capsys, 'convert', best, tmp_path / 'x.pth', '--class-names', 'a,b'
    )
    assert code == 1 and 'no metadata' in err
    assert not (tmp_path / 'x.pth').exists()


def test_convert_bad_input_writes_nothing(capsys, tmp_path):
    src = tmp_path / 'evil.pth'
    marker = tmp_path / 'MARKER'

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), 'w'))

    torch.save({'w': Evil()}, src)
    code, _, err = run(capsys, 'convert', src, tmp_path / 'out.safetensors')
    assert code == 1 and 'refused' in err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['evil.pth']


def test_the_installed_command_runs(best):
    done = subprocess.run(
        [sys.executable, '-m', 'napari_vmunet', 'info', str(best), '--json'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)['source_format'] == 'original-best'
